/*
 * Monitoring: the seeds' queries, and views for the people who run the service.
 *
 * Seed 000's two queries (balances and the latest 50 transactions, joined to
 * auth.users) run unchanged as service_role: it reads public.call_balance and
 * public.balance_transactions (granted with the tables) and auth.users.
 *
 * Schema `monitoring` is not exposed through the API; only service_role (and
 * the owner) may read it. Its views run with their owner's privileges on
 * purpose, so that they may join auth.users; that is safe only because the
 * schema is private — never add it to the API's exposed schemas.
 */

-- Supabase already lets service_role read auth.users; where the grant is not ours to give,
-- keep going (the local platform grants it).
do $$
begin
    grant select on auth.users to service_role;
exception when insufficient_privilege then
    raise notice 'auth.users: select for service_role is managed by the platform';
end
$$;

create schema if not exists monitoring;
comment on schema monitoring is 'Operational views for service_role. Not exposed through the API.';

revoke all on schema monitoring from public;
grant usage on schema monitoring to service_role;

create or replace view monitoring.balances as
select
    cb.user_id,
    u.email,
    cb.plan_id,
    cb.balance,
    coalesce(h.held_amount, 0) as held_amount,
    cb.free_minutes_remaining,
    cb.auto_refill_enabled,
    cb.auto_refill_threshold,
    cb.auto_refill_amount,
    cb.auto_refill_failures,
    cb.last_refill_at,
    case
        when cb.balance < cb.auto_refill_threshold then 'LOW'
        when cb.balance >= p.good_balance then 'GOOD'
        else 'OK'
    end as status,
    cb.created_at,
    cb.updated_at
from public.call_balance as cb
inner join auth.users as u on cb.user_id = u.id
inner join public.billing_plans as p on cb.plan_id = p.id
left join lateral (
    select sum(ch.held_amount) as held_amount
    from public.call_holds as ch
    where ch.user_id = cb.user_id and ch.released_at is null
) as h on true;

create or replace view monitoring.transactions as
select
    bt.created_at,
    bt.user_id,
    u.email,
    bt.type,
    bt.reason,
    bt.amount,
    bt.description,
    bt.balance_before,
    bt.balance_after,
    bt.stripe_payment_intent_id,
    bt.idempotency_key,
    bt.id
from public.balance_transactions as bt
inner join auth.users as u on bt.user_id = u.id;

create or replace view monitoring.low_balances as
select b.*
from monitoring.balances as b
where b.balance < b.auto_refill_threshold;

-- Always empty: a row here means a balance moved without its ledger entry.
create or replace view monitoring.ledger_drift as
select
    cb.user_id,
    cb.balance,
    coalesce(l.ledger_sum, 0) as ledger_sum,
    cb.balance - coalesce(l.ledger_sum, 0) as drift
from public.call_balance as cb
left join lateral (
    select sum(bt.amount) as ledger_sum
    from public.balance_transactions as bt
    where bt.user_id = cb.user_id
) as l on true
where cb.balance <> coalesce(l.ledger_sum, 0);

create or replace view monitoring.refill_failures as
select
    r.id,
    r.user_id,
    u.email,
    r.amount,
    r.status,
    r.attempts,
    r.last_error,
    r.next_attempt_at,
    cb.auto_refill_enabled,
    cb.auto_refill_failures,
    r.created_at,
    r.updated_at
from public.refill_requests as r
inner join public.call_balance as cb on r.user_id = cb.user_id
inner join auth.users as u on r.user_id = u.id
where r.status = 'failed' or r.last_error is not null;

create or replace view monitoring.daily_revenue as
select
    (bt.created_at at time zone 'UTC')::date as utc_day,
    coalesce(sum(bt.amount) filter (where bt.reason = 'topup'), 0) as topups,
    coalesce(sum(bt.amount) filter (where bt.reason = 'auto_refill'), 0) as auto_refills,
    coalesce(sum(bt.amount) filter (where bt.type = 'refund'), 0) as reversals,
    coalesce(sum(bt.amount) filter (where bt.reason = 'dispute_won'), 0) as disputes_won,
    coalesce(sum(bt.amount) filter (where bt.reason in ('topup', 'auto_refill', 'dispute_won')
        or bt.type = 'refund'), 0) as net_cash_in,
    coalesce(-sum(bt.amount) filter (where bt.reason = 'call'), 0) as call_revenue,
    coalesce(-sum(bt.amount) filter (where bt.reason in ('number_purchase', 'number_renewal')), 0)
    + coalesce(-sum(bt.amount) filter (where bt.reason = 'number_cancel'), 0) as number_revenue
from public.balance_transactions as bt
group by 1;

create or replace view monitoring.minutes_by_day as
select
    (l.created_at at time zone 'UTC')::date as utc_day,
    count(*) as calls,
    sum(l.duration) as seconds,
    sum(l.billed_minutes) as billed_minutes,
    sum(l.free_minutes_used) as free_minutes_used,
    sum(l.billed_minutes - l.free_minutes_used) as paid_minutes,
    sum(l.billed_amount) as billed_amount
from public.twilio_call_logs as l
group by 1;

create or replace view monitoring.expired_holds as
select
    h.call_sid,
    h.user_id,
    h.held_amount,
    h.held_free_minutes,
    h.max_seconds,
    h.created_at,
    h.released_at,
    exists(select from public.twilio_call_logs as l where l.call_sid = h.call_sid) as settled_later
from public.call_holds as h
where h.release_reason = 'expired';

grant select on all tables in schema monitoring to service_role;
