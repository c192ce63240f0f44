/*
 * Stripe lifecycles: money moves only as Stripe moved it.
 *
 * - Mode and version. An event is decided only when its `livemode` is the
 *   mode of the secret key the worker runs with (passed in by the worker) and
 *   it is rendered in the API version the rules below are written for
 *   (billing.stripe_api_version()). Anything else is refused, recorded as an
 *   operator alert, and never credited.
 * - Off-session payments that end `processing` (bank debits) are in flight:
 *   the refill request keeps its attempt and idempotency key, is never handed
 *   out again, and the outcome comes by webhook (payment_intent.succeeded /
 *   payment_intent.payment_failed). billing.record_refill_attempt decides
 *   what a PaymentIntent the charger got back means.
 * - Attempts whose outcome is unknown for 23 hours (Stripe may forget an
 *   idempotency key after 24) are never retried with the old key: they are
 *   handed out by billing.claim_refill_lookups to be looked up at Stripe.
 * - Refunds are counted per refund id: a refund debits when Stripe reports it
 *   (`pending` counts: the money has left the merchant's balance), and a
 *   failed refund gives back what its reversal took, once, in any order.
 *   `charge.refunded` (cumulative) is a catch-up for a payment whose refunds
 *   were never seen one by one; once one is, the refund events decide.
 * - Refunds and disputes of one payment together never reverse more than the
 *   payment credited.
 */

/* ------------------------------------------------------------------------
 * The API version the rules are written for
 * ------------------------------------------------------------------------ */

create or replace function billing.stripe_api_version()
returns text
language sql
immutable
set search_path = ''
as $$
    select '2026-10-28.endive'::text
$$;

comment on function billing.stripe_api_version() is
'The Stripe API version events must be rendered in (the pinned stripe-python''s).';

revoke execute on function billing.stripe_api_version() from public;
grant execute on function billing.stripe_api_version() to service_role;

/* ------------------------------------------------------------------------
 * Refill attempts: when they started, and whether Stripe is settling them
 * ------------------------------------------------------------------------ */

alter table public.refill_requests
add column attempt_started_at timestamptz,
add column awaiting_settlement_since timestamptz;

comment on column public.refill_requests.attempt_started_at is
'When the current attempt (its idempotency key) was first handed out.';
comment on column public.refill_requests.awaiting_settlement_since is
'Set while the attempt''s PaymentIntent is processing at Stripe (a bank debit): in flight.';

-- Attempts in flight before this migration: their age is at most the request's.
update public.refill_requests as r
set attempt_started_at = r.created_at
where r.status = 'processing';

/*
 * Pending requests whose backoff has passed, and attempts a worker claimed
 * more than 10 minutes ago without an outcome (it crashed), retried with the
 * same idempotency key while Stripe still remembers it (under 23 hours).
 * Never handed out: an attempt whose PaymentIntent is processing (its
 * outcome comes by webhook), or one older than 23 hours (looked up instead,
 * billing.claim_refill_lookups). A request whose account is at or above its
 * threshold when claimed is cancelled instead.
 */
create or replace function billing.claim_refills(p_limit integer)
returns setof public.refill_requests
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_now timestamptz := billing.now();
begin
    if p_limit is null or p_limit < 1 or p_limit > 1000 then
        perform billing._raise('PT400', 'The limit must be between 1 and 1000.');
    end if;
    return query
    with picked as (
        select
            r.id,
            r.status as old_status,
            cb.balance >= cb.auto_refill_threshold as funded
        from public.refill_requests as r
        inner join public.call_balance as cb on r.user_id = cb.user_id
        where
            (r.status = 'pending' and r.next_attempt_at <= v_now)
            or (
                r.status = 'processing'
                and r.claimed_at < v_now - interval '10 minutes'
                and r.awaiting_settlement_since is null
                and coalesce(r.attempt_started_at, r.created_at) > v_now - interval '23 hours'
            )
        order by r.next_attempt_at, r.id
        limit p_limit
        for update of r skip locked
    ),

    cancelled as (
        update public.refill_requests as r
        set
            status = 'cancelled',
            last_error = 'the balance was at or above the auto-refill threshold when claimed',
            completed_at = v_now,
            updated_at = v_now
        from picked
        where r.id = picked.id and picked.funded and picked.old_status = 'pending'
        returning r.id
    ),

    claimed as (
        update public.refill_requests as r
        set
            status = 'processing',
            attempts = case when picked.old_status = 'pending' then r.attempts + 1 else r.attempts end,
            idempotency_key = case
                when picked.old_status = 'pending' or r.idempotency_key is null
                    then 'refill_' || r.id || '_' || (r.attempts + 1)
                else r.idempotency_key
            end,
            attempt_started_at = case
                when picked.old_status = 'pending' then v_now
                else coalesce(r.attempt_started_at, r.created_at)
            end,
            stripe_payment_intent_id = case
                when picked.old_status = 'pending' then null else r.stripe_payment_intent_id
            end,
            awaiting_settlement_since = null,
            stripe_customer_id = coalesce(cb.stripe_customer_id, r.stripe_customer_id),
            stripe_payment_method_id = coalesce(
                cb.stripe_payment_method_id, r.stripe_payment_method_id
            ),
            claimed_at = v_now,
            updated_at = v_now
        from picked, public.call_balance as cb
        where
            r.id = picked.id
            and (not picked.funded or picked.old_status = 'processing')
            and cb.user_id = r.user_id
        returning r.*
    )

    select * from claimed;
end
$$;

revoke execute on function billing.claim_refills(integer) from public;
grant execute on function billing.claim_refills(integer) to service_role;

/*
 * Attempts whose outcome has been unknown for 23 hours or more, at most one
 * look-up per request every 10 minutes: the worker looks the PaymentIntent
 * up (by the stored id, else by metadata.refill_attempt) and reports it with
 * billing.record_refill_attempt. Never retried with the old key.
 */
create or replace function billing.claim_refill_lookups(p_limit integer)
returns setof public.refill_requests
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_now timestamptz := billing.now();
begin
    if p_limit is null or p_limit < 1 or p_limit > 1000 then
        perform billing._raise('PT400', 'The limit must be between 1 and 1000.');
    end if;
    return query
    with picked as (
        select r.id
        from public.refill_requests as r
        where
            r.status = 'processing'
            and coalesce(r.attempt_started_at, r.created_at) <= v_now - interval '23 hours'
            and coalesce(r.claimed_at, r.created_at) < v_now - interval '10 minutes'
        order by r.attempt_started_at, r.id
        limit p_limit
        for update of r skip locked
    )

    update public.refill_requests as r
    set claimed_at = v_now, updated_at = v_now
    from picked
    where r.id = picked.id
    returning r.*;
end
$$;

revoke execute on function billing.claim_refill_lookups(integer) from public;
grant execute on function billing.claim_refill_lookups(integer) to service_role;

/*
 * What the PaymentIntent of a refill attempt means (the charger's answer, a
 * look-up, or a payment_intent.processing event): `succeeded` credits (once,
 * on the intent id); `processing` keeps the attempt in flight until Stripe
 * settles it; any other status is a failed attempt (billing.fail_refill).
 * p_intent null: a look-up found no PaymentIntent for the attempt, so none
 * was created and a new attempt may charge. A report about another attempt
 * than the one in flight changes nothing.
 */
create or replace function billing.record_refill_attempt(
    p_request_id uuid,
    p_attempt text,
    p_intent jsonb
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_request public.refill_requests;
    v_intent_id text;
    v_status text;
    v_meta jsonb;
    v_error jsonb;
    v_amount bigint;
    v_now timestamptz := billing.now();
begin
    if p_request_id is null then
        perform billing._raise('PT400', 'The refill request id is required.');
    end if;
    if coalesce(p_attempt, '') = '' then
        perform billing._raise('PT400', 'The attempt (idempotency key) is required.');
    end if;
    if p_intent is not null and (
        pg_catalog.jsonb_typeof(p_intent) <> 'object'
        or pg_catalog.jsonb_typeof(p_intent -> 'status') is distinct from 'string'
        or billing._stripe_id(p_intent -> 'id') is null
    ) then
        perform billing._raise('PT400', 'The payment intent must be a Stripe PaymentIntent.');
    end if;
    select r.* into v_request from public.refill_requests as r where r.id = p_request_id;
    if not found then
        perform billing._raise('PT404', 'No such refill request.');
    end if;
    if p_intent is not null then
        v_intent_id := billing._check_id(billing._stripe_id(p_intent -> 'id'), 'payment intent id');
    end if;
    v_meta := coalesce(p_intent -> 'metadata', '{}'::jsonb);
    if p_intent is not null and (
        v_meta ->> 'refill_request_id' is distinct from p_request_id::text
        or v_meta ->> 'refill_attempt' is distinct from p_attempt
    ) then
        perform billing._raise('PT409', 'This payment intent belongs to another refill attempt.');
    end if;
    v_status := p_intent ->> 'status';

    if v_status = 'succeeded' then
        if pg_catalog.lower(p_intent ->> 'currency') is distinct from v_request.currency then
            perform billing._raise('PT409', 'The payment intent is not in the refill''s currency.');
        end if;
        v_amount := coalesce(
            nullif(billing._stripe_amount(p_intent -> 'amount_received'), 0),
            billing._stripe_amount(p_intent -> 'amount')
        );
        return pg_catalog.jsonb_build_object(
            'outcome', 'charged',
            'paymentIntentId', v_intent_id,
            'effect', billing.credit_topup(
                v_request.user_id, v_amount, v_intent_id, 'auto_refill',
                pg_catalog.jsonb_build_object('refill_request_id', p_request_id)
            )
        );
    end if;

    -- Any other outcome concerns only the attempt in flight.
    perform billing._lock_account(v_request.user_id);
    select r.* into v_request from public.refill_requests as r where r.id = p_request_id for update;
    if v_request.status <> 'processing' or v_request.idempotency_key is distinct from p_attempt then
        return pg_catalog.jsonb_build_object(
            'outcome', 'ignored', 'status', v_request.status,
            'reason', 'not the attempt in flight'
        );
    end if;
    if v_status in ('processing', 'requires_capture') then
        update public.refill_requests as r
        set
            stripe_payment_intent_id = v_intent_id,
            awaiting_settlement_since = coalesce(r.awaiting_settlement_since, v_now),
            updated_at = v_now
        where r.id = p_request_id;
        return pg_catalog.jsonb_build_object(
            'outcome', 'processing', 'paymentIntentId', v_intent_id,
            'reason', 'Stripe is settling the payment; its outcome comes by webhook'
        );
    end if;
    if p_intent is null then
        return pg_catalog.jsonb_build_object(
            'outcome', 'failed',
            'effect', billing.fail_refill(p_request_id, 'no payment intent was created', p_attempt)
        );
    end if;
    v_error := case
        when pg_catalog.jsonb_typeof(p_intent -> 'last_payment_error') = 'object'
            then p_intent -> 'last_payment_error'
        else '{}'::jsonb
    end;
    return pg_catalog.jsonb_build_object(
        'outcome', 'failed',
        'paymentIntentId', v_intent_id,
        'effect', billing.fail_refill(
            p_request_id,
            coalesce(v_error ->> 'decline_code', v_error ->> 'code', 'status ' || v_status),
            p_attempt
        )
    );
end
$$;

revoke execute on function billing.record_refill_attempt(uuid, text, jsonb) from public;
grant execute on function billing.record_refill_attempt(uuid, text, jsonb) to service_role;

/* ------------------------------------------------------------------------
 * Reversals of one payment never exceed what it credited
 * ------------------------------------------------------------------------ */

-- Cents refunds and disputes have taken from a payment intent, net of what came back.
create or replace function billing._reversed_cents(p_payment_intent_id text)
returns bigint
language sql
stable
set search_path = ''
as $$
    select coalesce(-sum(bt.amount) * 100, 0)::bigint
    from public.balance_transactions as bt
    where
        bt.stripe_payment_intent_id = p_payment_intent_id
        and bt.reason in ('refund', 'dispute', 'dispute_won')
$$;

revoke execute on function billing._reversed_cents(text) from public;

-- What may still be reversed of a credited payment (intent locked).
create or replace function billing._reversible_cents(p_credit public.balance_transactions)
returns bigint
language sql
stable
set search_path = ''
as $$
    select greatest(
        (p_credit.amount * 100)::bigint
        - billing._reversed_cents(p_credit.stripe_payment_intent_id),
        0
    )
$$;

revoke execute on function billing._reversible_cents(public.balance_transactions) from public;

/*
 * A cumulative refund level (charge.refunded) on a credited payment (intent
 * and account locked): the difference to what refunds already reversed,
 * capped at what refunds and disputes together have left of the payment.
 */
create or replace function billing._apply_refund(
    p_credit public.balance_transactions,
    p_amount_refunded_cents bigint,
    p_metadata jsonb
)
returns bigint
language plpgsql
set search_path = ''
as $$
declare
    v_target bigint := least(p_amount_refunded_cents, (p_credit.amount * 100)::bigint);
    v_done bigint := billing._refunded_cents(p_credit.stripe_payment_intent_id);
    v_delta bigint := least(v_target - v_done, billing._reversible_cents(p_credit));
begin
    if v_delta <= 0 then
        return 0;
    end if;
    perform billing._post(
        p_credit.user_id, -(v_delta::numeric / 100), 'refund', 'refund',
        pg_catalog.format('Refund of payment %s', p_credit.stripe_payment_intent_id),
        'refund:' || p_credit.stripe_payment_intent_id || ':' || (v_done + v_delta),
        p_credit.stripe_payment_intent_id,
        coalesce(p_metadata, '{}'::jsonb)
        || pg_catalog.jsonb_build_object('amount_refunded_cents', p_amount_refunded_cents)
    );
    perform billing._alert(
        p_credit.user_id, 'payment_reversed',
        pg_catalog.format('$%s of a payment was refunded and removed from your balance.',
            (v_delta::numeric / 100)::numeric(12, 2)),
        pg_catalog.jsonb_build_object('paymentIntentId', p_credit.stripe_payment_intent_id,
            'amount', (v_delta::numeric / 100)::numeric(12, 2))
    );
    return v_delta;
end
$$;

revoke execute on function billing._apply_refund(public.balance_transactions, bigint, jsonb)
from public;

/*
 * A chargeback on a credited payment (intent and account locked), once per
 * dispute: what refunds have left of the payment, never more. A fully
 * refunded payment's dispute withdraws nothing, as at Stripe.
 */
create or replace function billing._apply_dispute(
    p_credit public.balance_transactions,
    p_dispute_id text,
    p_amount_cents bigint
)
returns bigint
language plpgsql
set search_path = ''
as $$
declare
    v_cents bigint := least(p_amount_cents, billing._reversible_cents(p_credit));
    v_entry public.balance_transactions;
begin
    if exists (
        select from public.balance_transactions as bt
        where bt.idempotency_key = 'dispute:' || p_dispute_id
    ) or exists (
        select from public.payment_reversals as pr
        where
            pr.payment_intent_id = p_credit.stripe_payment_intent_id
            and pr.kind = 'dispute' and pr.reference = p_dispute_id and pr.status = 'applied'
    ) then
        return 0;
    end if;
    if v_cents > 0 then
        v_entry := billing._post(
            p_credit.user_id, -(v_cents::numeric / 100), 'refund', 'dispute',
            pg_catalog.format('Dispute %s on payment %s', p_dispute_id,
                p_credit.stripe_payment_intent_id),
            'dispute:' || p_dispute_id,
            p_credit.stripe_payment_intent_id,
            pg_catalog.jsonb_build_object('dispute_id', p_dispute_id)
        );
        perform billing._alert(
            p_credit.user_id, 'dispute',
            pg_catalog.format('A payment of yours is disputed: $%s was removed from your balance.',
                (v_cents::numeric / 100)::numeric(12, 2)),
            pg_catalog.jsonb_build_object('paymentIntentId', p_credit.stripe_payment_intent_id,
                'disputeId', p_dispute_id, 'amount', (v_cents::numeric / 100)::numeric(12, 2))
        );
    end if;
    update public.payment_reversals as pr
    set status = 'applied', user_id = p_credit.user_id, transaction_id = v_entry.id,
        applied_at = billing.now()
    where
        pr.payment_intent_id = p_credit.stripe_payment_intent_id
        and pr.kind = 'dispute'
        and pr.reference = p_dispute_id;
    return greatest(v_cents, 0);
end
$$;

revoke execute on function billing._apply_dispute(public.balance_transactions, text, bigint)
from public;

/* ------------------------------------------------------------------------
 * Refunds one by one: pending, succeeded, failed
 * ------------------------------------------------------------------------ */

alter table public.payment_reversals drop constraint payment_reversals_kind_check;
alter table public.payment_reversals add constraint payment_reversals_kind_check
check (kind in ('refund', 'dispute', 'dispute_won', 'refund_item'));
alter table public.payment_reversals
add column failed_at timestamptz,
-- refund_item: cents of a cumulative (charge.refunded) reversal this refund accounts for
add column absorbed_cents bigint not null default 0 check (absorbed_cents >= 0);

comment on column public.payment_reversals.failed_at is
'refund_item: when Stripe reported the refund failed (the money went back to the merchant).';

/*
 * Bring a credited payment's refunds up to date (intent and account locked):
 * each refund not yet counted first accounts for what charge.refunded already
 * reversed, then debits the rest under its own id (a failed one debits
 * nothing of its own); each failed refund then gives back, once, what its
 * reversal took. Returns the cents moved (negative: given back).
 */
create or replace function billing._settle_refund_items(p_credit public.balance_transactions)
returns bigint
language plpgsql
set search_path = ''
as $$
declare
    v_pi text := p_credit.stripe_payment_intent_id;
    v_unattributed bigint;
    v_item public.payment_reversals;
    v_cents bigint;
    v_take bigint;
    v_own bigint;
    v_took bigint;
    v_entry public.balance_transactions;
    v_moved bigint := 0;
begin
    select
        coalesce(-sum(bt.amount) * 100, 0)::bigint
        - coalesce((
            select sum(pr.absorbed_cents) from public.payment_reversals as pr
            where pr.payment_intent_id = v_pi and pr.kind = 'refund_item'
        ), 0)
    into v_unattributed
    from public.balance_transactions as bt
    where
        bt.stripe_payment_intent_id = v_pi
        and bt.reason = 'refund'
        and bt.idempotency_key like 'refund:' || v_pi || ':%';

    for v_item in
        select pr.* from public.payment_reversals as pr
        where pr.payment_intent_id = v_pi and pr.kind = 'refund_item' and pr.status = 'pending'
        order by pr.created_at, pr.id
    loop
        v_cents := (v_item.amount * 100)::bigint;
        v_take := least(v_cents, greatest(v_unattributed, 0));
        v_unattributed := v_unattributed - v_take;
        v_own := case
            when v_item.failed_at is not null then 0
            else least(v_cents - v_take, billing._reversible_cents(p_credit))
        end;
        v_entry := null;
        if v_own > 0 then
            v_entry := billing._post(
                p_credit.user_id, -(v_own::numeric / 100), 'refund', 'refund',
                pg_catalog.format('Refund %s of payment %s', v_item.reference, v_pi),
                'refund:' || v_item.reference, v_pi,
                pg_catalog.jsonb_build_object('refund_id', v_item.reference)
            );
            perform billing._alert(
                p_credit.user_id, 'payment_reversed',
                pg_catalog.format('$%s of a payment was refunded and removed from your balance.',
                    (v_own::numeric / 100)::numeric(12, 2)),
                pg_catalog.jsonb_build_object('paymentIntentId', v_pi,
                    'refundId', v_item.reference, 'amount', (v_own::numeric / 100)::numeric(12, 2))
            );
            v_moved := v_moved + v_own;
        end if;
        update public.payment_reversals as pr
        set
            status = case
                when v_item.failed_at is not null and v_take = 0 then 'cancelled' else 'applied'
            end,
            absorbed_cents = v_take,
            user_id = p_credit.user_id,
            transaction_id = v_entry.id,
            applied_at = billing.now()
        where pr.id = v_item.id;
    end loop;

    for v_item in
        select pr.* from public.payment_reversals as pr
        where
            pr.payment_intent_id = v_pi and pr.kind = 'refund_item'
            and pr.status = 'applied' and pr.failed_at is not null
            and not exists (
                select from public.balance_transactions as bt
                where bt.idempotency_key = 'refund_failed:' || pr.reference
            )
        order by pr.created_at, pr.id
    loop
        v_took := v_item.absorbed_cents + coalesce((
            select (-bt.amount * 100)::bigint from public.balance_transactions as bt
            where bt.id = v_item.transaction_id
        ), 0);
        if v_took > 0 then
            perform billing._post(
                p_credit.user_id, v_took::numeric / 100, 'credit', 'refund',
                pg_catalog.format('Refund %s of payment %s failed', v_item.reference, v_pi),
                'refund_failed:' || v_item.reference, v_pi,
                pg_catalog.jsonb_build_object('refund_id', v_item.reference, 'failed', true)
            );
            perform billing._alert(
                p_credit.user_id, 'payment_reversed',
                pg_catalog.format('A refund of $%s failed: the money is back in your balance.',
                    (v_took::numeric / 100)::numeric(12, 2)),
                pg_catalog.jsonb_build_object('paymentIntentId', v_pi,
                    'refundId', v_item.reference, 'amount', (v_took::numeric / 100)::numeric(12, 2))
            );
            v_moved := v_moved - v_took;
        end if;
    end loop;
    return v_moved;
end
$$;

revoke execute on function billing._settle_refund_items(public.balance_transactions) from public;

/*
 * One refund as Stripe reports it (refund.created, refund.updated,
 * refund.failed, charge.refund.updated): `pending`, `requires_action` and
 * `succeeded` count as refunded; `failed` and `canceled` give back what the
 * refund took. Recorded before the payment is credited, applied when it is.
 */
create or replace function billing.apply_refund(
    p_payment_intent_id text,
    p_refund_id text,
    p_amount_cents bigint,
    p_status text
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_amount numeric(12, 2) := billing._cents(p_amount_cents, 'refund amount');
    v_failed boolean;
    v_credit public.balance_transactions;
    v_moved bigint;
begin
    perform billing._check_id(p_payment_intent_id, 'payment intent id');
    perform billing._check_id(p_refund_id, 'refund id');
    if p_status is null
        or p_status not in ('pending', 'requires_action', 'succeeded', 'failed', 'canceled') then
        perform billing._raise('PT400',
            'The refund status must be pending, requires_action, succeeded, failed or canceled.');
    end if;
    v_failed := p_status in ('failed', 'canceled');
    perform billing._lock_payment_intent(p_payment_intent_id);
    v_credit := billing._payment_credit(p_payment_intent_id);
    insert into public.payment_reversals (
        payment_intent_id, user_id, kind, reference, amount, failed_at, created_at
    ) values (
        p_payment_intent_id, v_credit.user_id, 'refund_item', p_refund_id, v_amount,
        case when v_failed then billing.now() end, billing.now()
    )
    on conflict (payment_intent_id, kind, reference) do update
    set failed_at = coalesce(public.payment_reversals.failed_at, excluded.failed_at);
    if v_credit.id is null then
        return pg_catalog.jsonb_build_object('movedCents', 0, 'balance', null, 'pending', true);
    end if;
    perform billing._lock_account(v_credit.user_id);
    v_moved := billing._settle_refund_items(v_credit);
    return pg_catalog.jsonb_build_object(
        'movedCents', v_moved,
        'balance', (select cb.balance from public.call_balance as cb
            where cb.user_id = v_credit.user_id),
        'pending', false
    );
end
$$;

revoke execute on function billing.apply_refund(text, text, bigint, text) from public;
grant execute on function billing.apply_refund(text, text, bigint, text) to service_role;

/* ------------------------------------------------------------------------
 * billing.credit_topup: also applies refunds reported one by one before it
 * ------------------------------------------------------------------------ */

create or replace function billing.credit_topup(
    p_user_id uuid,
    p_amount_cents bigint,
    p_payment_intent_id text,
    p_reason text default 'topup',
    p_metadata jsonb default '{}'::jsonb
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_amount numeric(12, 2) := billing._cents(p_amount_cents);
    v_reason text := coalesce(p_reason, 'topup');
    v_metadata jsonb := coalesce(p_metadata, '{}'::jsonb);
    v_existing public.balance_transactions;
    v_entry public.balance_transactions;
    v_pending public.payment_reversals;
    v_request_id uuid;
    v_now timestamptz := billing.now();
    v_reversed bigint := 0;
begin
    perform billing._check_id(p_payment_intent_id, 'payment intent id');
    if v_reason not in ('topup', 'auto_refill') then
        perform billing._raise('PT400', 'The reason must be topup or auto_refill.');
    end if;
    if p_user_id is null then
        perform billing._raise('PT400', 'The user id is required.');
    end if;
    if pg_catalog.jsonb_typeof(v_metadata) <> 'object' then
        perform billing._raise('PT400', 'The metadata must be a JSON object.');
    end if;

    perform billing._lock_payment_intent(p_payment_intent_id);
    v_existing := billing._payment_credit(p_payment_intent_id);
    if v_existing.id is not null then
        if v_existing.user_id <> p_user_id then
            perform billing._raise('PT409',
                'This payment was already credited to another account.');
        end if;
        return pg_catalog.jsonb_build_object(
            'transactionId', v_existing.id,
            'balance', (select cb.balance from public.call_balance as cb
                where cb.user_id = p_user_id),
            'duplicate', true
        );
    end if;

    perform billing._lock_account(p_user_id);
    v_entry := billing._post(
        p_user_id, v_amount, 'credit', v_reason,
        case v_reason when 'auto_refill' then 'Automatic top-up' else 'Top-up' end,
        'payment:' || p_payment_intent_id, p_payment_intent_id, v_metadata
    );
    update public.call_balance as cb
    set last_refill_at = v_now
    where cb.user_id = p_user_id;

    if v_reason = 'auto_refill' then
        if coalesce(v_metadata ->> 'refill_request_id', '')
            ~ '^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$' then
            v_request_id := (v_metadata ->> 'refill_request_id')::uuid;
        end if;
        update public.refill_requests as r
        set
            status = 'succeeded',
            stripe_payment_intent_id = p_payment_intent_id,
            completed_at = v_now,
            updated_at = v_now
        where r.id = v_request_id and r.user_id = p_user_id;
        update public.call_balance as cb
        set auto_refill_failures = 0
        where cb.user_id = p_user_id;
        perform billing._alert(
            p_user_id, 'refill_succeeded',
            pg_catalog.format('$%s was added to your balance automatically.', v_amount),
            pg_catalog.jsonb_build_object('amount', v_amount, 'refillRequestId', v_request_id)
        );
    end if;

    -- Refunds and disputes that arrived before this payment was credited.
    for v_pending in
        select pr.*
        from public.payment_reversals as pr
        where pr.payment_intent_id = p_payment_intent_id and pr.status = 'pending'
        order by pr.created_at, pr.id
    loop
        if v_pending.kind = 'refund' then
            v_reversed := v_reversed + billing._apply_refund(
                v_entry, (v_pending.amount * 100)::bigint, '{}'::jsonb
            );
            update public.payment_reversals as pr
            set status = 'applied', user_id = p_user_id, applied_at = v_now
            where pr.id = v_pending.id;
        elsif v_pending.kind = 'dispute' then
            v_reversed := v_reversed + billing._apply_dispute(
                v_entry, v_pending.reference, (v_pending.amount * 100)::bigint
            );
        end if;
    end loop;
    -- Refunds reported one by one before this payment was credited.
    v_reversed := v_reversed + billing._settle_refund_items(v_entry);

    return pg_catalog.jsonb_build_object(
        'transactionId', v_entry.id,
        'balance', (select cb.balance from public.call_balance as cb where cb.user_id = p_user_id),
        'duplicate', false,
        'reversedCents', v_reversed
    );
end
$$;

revoke execute on function billing.credit_topup(uuid, bigint, text, text, jsonb) from public;
grant execute on function billing.credit_topup(uuid, bigint, text, text, jsonb) to service_role;

/* ------------------------------------------------------------------------
 * billing.apply_stripe_event: the mode and API version first, then as before,
 * with bank debits in flight and refunds one by one
 * ------------------------------------------------------------------------ */

-- The mode is the worker's to say: an event cannot be applied without it.
drop function billing.apply_stripe_event(jsonb);

create or replace function billing.apply_stripe_event(p_event jsonb, p_livemode boolean)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_event_id text;
    v_type text;
    v_object jsonb;
    v_meta jsonb;
    v_purpose text;
    v_user_id uuid;
    v_object_id text;
    v_intent text;
    v_amount bigint;
    v_currency text;
    v_status text;
    v_action text;
    v_customer text;
    v_method text;
    v_error jsonb;
    v_effect jsonb;
    v_refusal text;
begin
    if pg_catalog.jsonb_typeof(p_event) is distinct from 'object'
        or pg_catalog.jsonb_typeof(p_event -> 'id') is distinct from 'string'
        or pg_catalog.jsonb_typeof(p_event -> 'type') is distinct from 'string' then
        return '{"outcome": "skipped", "reason": "not a Stripe event"}'::jsonb;
    end if;
    v_event_id := p_event ->> 'id';
    v_type := p_event ->> 'type';

    /* Refuse an event of the other mode, or rendered in another API version. */
    if p_livemode is null then
        perform billing._raise('PT400', 'Say which mode (live or test) this system runs in.');
    end if;
    v_refusal := case
        when pg_catalog.jsonb_typeof(p_event -> 'livemode') is distinct from 'boolean'
            then 'event without livemode'
        when (p_event ->> 'livemode')::boolean <> p_livemode
            then pg_catalog.format(
                'a %s-mode event reached a %s-mode system',
                case when p_livemode then 'test' else 'live' end,
                case when p_livemode then 'live' else 'test' end
            )
        when (p_event ->> 'api_version') is distinct from billing.stripe_api_version()
            then pg_catalog.format(
                'rendered in API version %s, not %s',
                coalesce(p_event ->> 'api_version', '(none)'), billing.stripe_api_version()
            )
    end;
    if v_refusal is not null then
        perform billing._operator_alert(
            'stripe_event_refused',
            pg_catalog.format(
                'Stripe event %s (%s) was refused: %s. Check the webhook endpoint''s mode, '
                || 'API version and secret.', v_event_id, v_type, v_refusal
            ),
            null,
            pg_catalog.jsonb_build_object(
                'eventId', v_event_id, 'eventType', v_type, 'reason', v_refusal,
                'livemode', p_event -> 'livemode', 'apiVersion', p_event -> 'api_version'
            ),
            'stripe_event_refused:' || pg_catalog.left(v_event_id, 255)
        );
        return pg_catalog.jsonb_build_object('outcome', 'refused', 'reason', v_refusal);
    end if;

    v_object := p_event #> '{data,object}';
    if pg_catalog.jsonb_typeof(v_object) is distinct from 'object' then
        return '{"outcome": "skipped", "reason": "event without data.object"}'::jsonb;
    end if;
    v_meta := case
        when pg_catalog.jsonb_typeof(v_object -> 'metadata') = 'object' then v_object -> 'metadata'
        else '{}'::jsonb
    end;
    v_purpose := v_meta ->> 'purpose';
    v_currency := pg_catalog.lower(v_object ->> 'currency');

    /* Decide: what the event asks for, or why nothing. */
    case v_type
        when 'checkout.session.completed', 'checkout.session.async_payment_succeeded' then
            if v_purpose is distinct from 'topup' or coalesce(v_meta ->> 'user_id', '') = '' then
                return '{"outcome": "skipped", "reason": "not a top-up of this system"}'::jsonb;
            end if;
            if (v_object ->> 'payment_status') is distinct from 'paid' then
                return pg_catalog.jsonb_build_object(
                    'outcome', 'skipped',
                    'reason', pg_catalog.format(
                        'payment_status is %s; waiting',
                        coalesce(v_object ->> 'payment_status', 'missing')
                    )
                );
            end if;
            v_intent := billing._stripe_id(v_object -> 'payment_intent');
            v_amount := billing._stripe_amount(v_object -> 'amount_total');
            v_action := 'credit';
        when 'payment_intent.succeeded' then
            if v_purpose is null or v_purpose not in ('topup', 'auto_refill')
                or coalesce(v_meta ->> 'user_id', '') = '' then
                return '{"outcome": "skipped", "reason": "not a payment of this system"}'::jsonb;
            end if;
            v_intent := billing._stripe_id(v_object -> 'id');
            v_amount := coalesce(
                nullif(billing._stripe_amount(v_object -> 'amount_received'), 0),
                billing._stripe_amount(v_object -> 'amount')
            );
            v_action := 'credit';
        when 'payment_intent.payment_failed' then
            if v_purpose is distinct from 'auto_refill'
                or coalesce(v_meta ->> 'refill_request_id', '')
                !~ '^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$' then
                return '{"outcome": "skipped", "reason": "not an auto-refill of this system"}'::jsonb;
            end if;
            v_intent := billing._stripe_id(v_object -> 'id');
            v_action := 'refill_failed';
        when 'payment_intent.processing' then
            if v_purpose is distinct from 'auto_refill'
                or coalesce(v_meta ->> 'refill_request_id', '')
                !~ '^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$'
                or coalesce(v_meta ->> 'refill_attempt', '') = '' then
                return '{"outcome": "skipped", "reason": "not an auto-refill of this system"}'::jsonb;
            end if;
            v_intent := billing._stripe_id(v_object -> 'id');
            v_action := 'refill_processing';
        when 'refund.created', 'refund.updated', 'refund.failed', 'charge.refund.updated' then
            v_intent := billing._stripe_id(v_object -> 'payment_intent');
            v_amount := billing._stripe_amount(v_object -> 'amount');
            v_object_id := billing._stripe_id(v_object -> 'id');
            v_status := coalesce(v_object ->> 'status', '');
            if v_object_id is null
                or v_status not in ('pending', 'requires_action', 'succeeded', 'failed', 'canceled') then
                return pg_catalog.jsonb_build_object(
                    'outcome', 'skipped',
                    'reason', pg_catalog.format(
                        'refund status %s is not handled', coalesce(nullif(v_status, ''), 'missing')
                    )
                );
            end if;
            v_action := 'refund_item';
        when 'charge.refunded' then
            v_intent := billing._stripe_id(v_object -> 'payment_intent');
            if exists (
                select from public.payment_reversals as pr
                where pr.payment_intent_id = v_intent and pr.kind = 'refund_item'
            ) then
                return '{"outcome": "skipped", "reason": "this payment''s refunds are counted one by one"}'::jsonb;
            end if;
            v_amount := billing._stripe_amount(v_object -> 'amount_refunded');
            v_object_id := billing._stripe_id(v_object -> 'id');
            v_action := 'refund';
        when
            'charge.dispute.created', 'charge.dispute.updated', 'charge.dispute.closed',
            'charge.dispute.funds_withdrawn', 'charge.dispute.funds_reinstated'
            then
            v_intent := billing._stripe_id(v_object -> 'payment_intent');
            v_amount := billing._stripe_amount(v_object -> 'amount');
            v_object_id := billing._stripe_id(v_object -> 'id');
            v_status := coalesce(v_object ->> 'status', '');
            v_action := case
                when v_type = 'charge.dispute.funds_withdrawn' then 'withdraw'
                when v_type = 'charge.dispute.funds_reinstated' then 'reinstate'
                -- An inquiry: Stripe withdraws nothing, so nothing moves here.
                when v_status like 'warning\_%' then null
                when v_status = 'won' then 'reinstate'
                when v_status in ('needs_response', 'under_review', 'lost') then 'withdraw'
            end;
            if v_action is null then
                return pg_catalog.jsonb_build_object(
                    'outcome', 'skipped',
                    'reason', pg_catalog.format(
                        'dispute status %s moves no funds', coalesce(nullif(v_status, ''), 'missing')
                    )
                );
            end if;
        when 'checkout.session.async_payment_failed' then
            return '{"outcome": "skipped", "reason": "delayed payment failed; nothing to credit"}'::jsonb;
        else
            return '{"outcome": "skipped", "reason": "event type not handled"}'::jsonb;
    end case;

    if v_intent is null
        or (v_action in ('credit', 'refund', 'withdraw', 'reinstate', 'refund_item')
            and v_amount is null)
        or (v_action in ('withdraw', 'reinstate', 'refund_item') and v_object_id is null) then
        return '{"outcome": "skipped", "reason": "event without a payment intent or amount"}'::jsonb;
    end if;
    if v_action = 'credit' then
        v_user_id := billing._stripe_user(v_meta);
    end if;

    /* Dedupe on the event id, in the transaction of its effect. */
    perform billing._check_id(v_event_id, 'event id');
    insert into public.stripe_events (event_id, type, object_id, received_at)
    values (
        v_event_id, pg_catalog.left(v_type, 255),
        billing._check_id(coalesce(v_object_id, v_intent), 'object id'), billing.now()
    )
    on conflict (event_id) do nothing;
    if not found then
        return '{"outcome": "duplicate event"}'::jsonb;
    end if;

    /* Only USD is dollars: anything else is left to the operator, never converted. */
    if v_currency is distinct from 'usd' and v_action not in ('refill_failed', 'refill_processing') then
        if v_action = 'credit' then
            perform billing._operator_alert(
                'payment_not_credited',
                pg_catalog.format(
                    'Payment %s of %s %s was not credited: only USD is credited. Refund or settle it by hand.',
                    v_intent, v_amount, pg_catalog.upper(coalesce(v_currency, '(no currency)'))
                ),
                v_user_id,
                pg_catalog.jsonb_build_object(
                    'eventId', v_event_id, 'eventType', v_type, 'paymentIntentId', v_intent,
                    'amount', v_amount, 'currency', v_currency
                ),
                'payment_not_credited:' || v_intent
            );
        end if;
        return pg_catalog.jsonb_build_object(
            'outcome', 'not credited',
            'reason', pg_catalog.format(
                'currency %s is not credited', coalesce(v_currency, '(none)')
            )
        );
    end if;

    /* Apply. */
    case v_action
        when 'credit' then
            v_effect := billing.credit_topup(
                v_user_id, v_amount, v_intent, v_purpose,
                case
                    when v_type like 'checkout.session.%'
                        then pg_catalog.jsonb_build_object('checkout_session_id', v_object ->> 'id')
                    when coalesce(v_meta ->> 'refill_request_id', '') <> ''
                        then pg_catalog.jsonb_build_object(
                            'refill_request_id', v_meta ->> 'refill_request_id'
                        )
                    else '{}'::jsonb
                end
            );
            v_customer := billing._stripe_id(v_object -> 'customer');
            v_method := billing._stripe_id(v_object -> 'payment_method');
            if v_type like 'payment_intent.%' and v_customer is not null and v_method is not null
                and (v_purpose = 'auto_refill'
                    or coalesce(v_object ->> 'setup_future_usage', '') <> '') then
                perform billing.save_payment_method(v_user_id, v_customer, v_method);
            elsif v_type like 'checkout.session.%' and v_customer is not null then
                -- The account row is locked by the credit above.
                update public.call_balance as cb
                set stripe_customer_id = billing._check_id(v_customer, 'customer id')
                where
                    cb.user_id = v_user_id
                    and cb.stripe_customer_id is distinct from v_customer;
            end if;
        when 'refill_failed' then
            v_error := coalesce(v_object -> 'last_payment_error', '{}'::jsonb);
            v_effect := billing.fail_refill(
                (v_meta ->> 'refill_request_id')::uuid,
                coalesce(
                    v_error ->> 'decline_code', v_error ->> 'code', 'payment_failed'
                ),
                v_meta ->> 'refill_attempt'
            );
        when 'refill_processing' then
            v_effect := billing.record_refill_attempt(
                (v_meta ->> 'refill_request_id')::uuid, v_meta ->> 'refill_attempt', v_object
            );
        when 'refund_item' then
            v_effect := billing.apply_refund(v_intent, v_object_id, v_amount, v_status);
        when 'refund' then
            v_effect := billing.reverse_refund(
                v_intent, v_amount, pg_catalog.jsonb_build_object('charge_id', v_object_id)
            );
        when 'withdraw' then
            v_effect := billing.reverse_dispute(v_intent, v_object_id, v_amount);
        when 'reinstate' then
            v_effect := billing.restore_dispute(v_intent, v_object_id, v_amount);
    end case;
    return pg_catalog.jsonb_build_object('outcome', 'applied', 'action', v_action, 'effect', v_effect);
end
$$;

revoke execute on function billing.apply_stripe_event(jsonb, boolean) from public;
grant execute on function billing.apply_stripe_event(jsonb, boolean) to service_role;
