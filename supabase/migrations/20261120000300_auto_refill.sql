/*
 * Auto-refill: the queue of off-session charges.
 *
 * A usage debit that leaves balance < threshold on an account with auto-refill
 * on enqueues one request (a unique index allows one in flight per account, so
 * a burst of debits charges once) and announces it with
 * pg_notify('refill_requests', <id>). Workers claim requests with
 * FOR UPDATE SKIP LOCKED, charge the saved card with the request's
 * idempotency key, and the payment webhook credits through
 * billing.credit_topup(..., 'auto_refill', {"refill_request_id": ...}), which
 * closes the request. A failure counts once per attempt (the worker and the
 * payment_failed webhook may both report it) and backs off; three in a row
 * turn auto-refill off.
 * A monthly cap per account (call_balance.auto_refill_monthly_cap) pauses it.
 */

create table public.refill_requests (
    id uuid primary key default gen_random_uuid(),
    user_id uuid not null references public.call_balance (user_id) on delete cascade,
    amount numeric(12, 2) not null check (amount > 0 and amount <= 10000),
    amount_cents bigint generated always as ((amount * 100)::bigint) stored,
    currency text not null default 'usd',
    status text not null default 'pending'
    check (status in ('pending', 'processing', 'succeeded', 'failed', 'cancelled')),
    attempts integer not null default 0 check (attempts >= 0),
    -- the Stripe idempotency key of the current attempt (new per retry after a failure)
    idempotency_key text unique,
    stripe_customer_id text,
    stripe_payment_method_id text,
    stripe_payment_intent_id text,
    last_error text,
    next_attempt_at timestamptz not null default now(),
    claimed_at timestamptz,
    completed_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

comment on table public.refill_requests is
'Auto-refill queue: at most one request in flight (pending or processing) per account.';

create unique index refill_requests_one_in_flight
on public.refill_requests (user_id)
where status in ('pending', 'processing');

create index refill_requests_user_id_created_at_idx
on public.refill_requests (user_id, created_at desc);

create index refill_requests_due_idx
on public.refill_requests (next_attempt_at)
where status in ('pending', 'processing');

alter table public.refill_requests enable row level security;
-- No policy: the queue is read and written by workers only (service_role, through functions).

grant select on public.refill_requests to service_role;

/*
 * After a usage debit on a locked account: alert when the balance crosses
 * below the threshold, and enqueue a refill when auto-refill is on, none is in
 * flight, and the month's auto-refill charges stay within the cap.
 */
create or replace function billing._after_debit(p_user_id uuid, p_balance_before numeric)
returns uuid
language plpgsql
as $$
declare
    v_account public.call_balance;
    v_now timestamptz := billing.now();
    v_month_start timestamptz := pg_catalog.date_trunc('month', v_now, 'UTC');
    v_month_total numeric(12, 2);
    v_request_id uuid;
begin
    select cb.* into v_account from public.call_balance as cb where cb.user_id = p_user_id;
    if v_account.balance >= v_account.auto_refill_threshold then
        return null;
    end if;
    if not v_account.auto_refill_enabled or v_account.stripe_payment_method_id is null then
        if p_balance_before >= v_account.auto_refill_threshold then
            perform billing._alert(
                p_user_id, 'low_balance',
                pg_catalog.format('Your balance is $%s, below $%s.',
                    v_account.balance, v_account.auto_refill_threshold),
                pg_catalog.jsonb_build_object('balance', v_account.balance,
                    'threshold', v_account.auto_refill_threshold)
            );
        end if;
        return null;
    end if;
    -- A refill in flight counts toward the threshold: never a second one.
    if exists (
        select from public.refill_requests as r
        where r.user_id = p_user_id and r.status in ('pending', 'processing')
    ) then
        return null;
    end if;
    select coalesce(sum(bt.amount), 0) into v_month_total
    from public.balance_transactions as bt
    where
        bt.user_id = p_user_id
        and bt.reason = 'auto_refill'
        and bt.created_at >= v_month_start;
    if v_month_total + v_account.auto_refill_amount > v_account.auto_refill_monthly_cap then
        perform billing._alert(
            p_user_id, 'auto_refill_cap_reached',
            pg_catalog.format(
                'Auto-refill is paused until next month: this month''s refills reached $%s '
                || 'of the $%s limit.', v_month_total, v_account.auto_refill_monthly_cap),
            pg_catalog.jsonb_build_object('monthTotal', v_month_total,
                'cap', v_account.auto_refill_monthly_cap),
            'auto_refill_cap:' || p_user_id || ':' || pg_catalog.to_char(v_month_start, 'YYYY-MM')
        );
        return null;
    end if;
    insert into public.refill_requests (
        user_id, amount, stripe_customer_id, stripe_payment_method_id, next_attempt_at,
        created_at, updated_at
    ) values (
        p_user_id, v_account.auto_refill_amount, v_account.stripe_customer_id,
        v_account.stripe_payment_method_id, v_now, v_now, v_now
    )
    returning id into v_request_id;
    perform billing._alert(
        p_user_id, 'low_balance',
        pg_catalog.format('Your balance is $%s, below $%s: adding $%s automatically.',
            v_account.balance, v_account.auto_refill_threshold, v_account.auto_refill_amount),
        pg_catalog.jsonb_build_object('balance', v_account.balance,
            'threshold', v_account.auto_refill_threshold,
            'refillRequestId', v_request_id, 'refillAmount', v_account.auto_refill_amount)
    );
    perform pg_catalog.pg_notify('refill_requests', v_request_id::text);
    return v_request_id;
end
$$;

revoke execute on function billing._after_debit(uuid, numeric) from public;

-- Cancel the waiting request of an account whose auto-refill was turned off (account locked).
create or replace function billing._cancel_pending_refills(p_user_id uuid, p_reason text)
returns void
language sql
as $$
    update public.refill_requests as r
    set status = 'cancelled', last_error = p_reason, completed_at = billing.now(),
        updated_at = billing.now()
    where r.user_id = p_user_id and r.status = 'pending'
$$;

revoke execute on function billing._cancel_pending_refills(uuid, text) from public;

/* ------------------------------------------------------------------------
 * billing.claim_refills: hand due requests to one worker each
 * ------------------------------------------------------------------------ */

/*
 * Pending requests whose backoff has passed, and requests a worker claimed
 * more than 10 minutes ago without an outcome (it crashed): the latter keep
 * their idempotency key, so Stripe will not charge twice.
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
        select r.id, r.status as old_status
        from public.refill_requests as r
        where
            (r.status = 'pending' and r.next_attempt_at <= v_now)
            or (r.status = 'processing' and r.claimed_at < v_now - interval '10 minutes')
        order by r.next_attempt_at, r.id
        limit p_limit
        for update of r skip locked
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
            stripe_customer_id = coalesce(cb.stripe_customer_id, r.stripe_customer_id),
            stripe_payment_method_id = coalesce(
                cb.stripe_payment_method_id, r.stripe_payment_method_id
            ),
            claimed_at = v_now,
            updated_at = v_now
        from picked, public.call_balance as cb
        where r.id = picked.id and cb.user_id = r.user_id
        returning r.*
    )

    select * from claimed;
end
$$;

revoke execute on function billing.claim_refills(integer) from public;
grant execute on function billing.claim_refills(integer) to service_role;

/* ------------------------------------------------------------------------
 * billing.fail_refill: back off, and give up after three failures in a row
 * ------------------------------------------------------------------------ */

-- p_attempt: the idempotency key of the failed attempt (a payment intent's
-- metadata.refill_attempt). A late report of an older attempt is ignored, so it
-- cannot count against the attempt in flight now. Null: the attempt in flight.
create or replace function billing.fail_refill(
    p_request_id uuid,
    p_error text,
    p_attempt text default null
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_user_id uuid;
    v_request public.refill_requests;
    v_account public.call_balance;
    v_now timestamptz := billing.now();
    v_error text := pg_catalog.left(coalesce(nullif(pg_catalog.btrim(p_error), ''),
        'unknown error'), 1000);
    v_failures integer;
    v_status text;
    v_next timestamptz;
begin
    if p_request_id is null then
        perform billing._raise('PT400', 'The refill request id is required.');
    end if;
    select r.user_id into v_user_id from public.refill_requests as r where r.id = p_request_id;
    if not found then
        perform billing._raise('PT404', 'No such refill request.');
    end if;
    v_account := billing._lock_account(v_user_id);
    select r.* into v_request from public.refill_requests as r where r.id = p_request_id for update;
    if
        v_request.status <> 'processing'
        or (p_attempt is not null and p_attempt is distinct from v_request.idempotency_key)
    then
        -- No attempt in flight: this failure was already counted (the worker and the
        -- payment_failed webhook both report it), the report is about an older
        -- attempt, or the request is closed.
        return pg_catalog.jsonb_build_object(
            'requestId', v_request.id, 'status', v_request.status, 'ignored', true,
            'failures', v_account.auto_refill_failures,
            'autoRefillEnabled', v_account.auto_refill_enabled
        );
    end if;
    v_failures := v_account.auto_refill_failures + 1;
    if v_failures >= 3 then
        v_status := 'failed';
        update public.call_balance as cb
        set auto_refill_failures = v_failures, auto_refill_enabled = false, updated_at = v_now
        where cb.user_id = v_user_id;
        perform billing._alert(
            v_user_id, 'auto_refill_disabled',
            'Auto-refill was turned off after 3 failed charges in a row. '
            || 'Update your card and turn it on again.',
            pg_catalog.jsonb_build_object('refillRequestId', v_request.id, 'error', v_error)
        );
    else
        v_status := 'pending';
        -- 5 minutes, then 20: the card may work again soon, but not in a tight loop.
        v_next := v_now + pg_catalog.make_interval(mins => 5 * (4 ^ (v_failures - 1))::integer);
        update public.call_balance as cb
        set auto_refill_failures = v_failures, updated_at = v_now
        where cb.user_id = v_user_id;
    end if;
    update public.refill_requests as r
    set
        status = v_status,
        last_error = v_error,
        next_attempt_at = coalesce(v_next, r.next_attempt_at),
        completed_at = case when v_status = 'failed' then v_now end,
        updated_at = v_now
    where r.id = p_request_id
    returning r.* into v_request;
    perform billing._alert(
        v_user_id, 'refill_failed',
        pg_catalog.format('An automatic top-up of $%s failed: %s', v_request.amount, v_error),
        pg_catalog.jsonb_build_object('refillRequestId', v_request.id, 'failures', v_failures)
    );
    return pg_catalog.jsonb_build_object(
        'requestId', v_request.id,
        'status', v_request.status,
        'attempts', v_request.attempts,
        'failures', v_failures,
        'nextAttemptAt', case when v_status = 'pending' then v_request.next_attempt_at end,
        'autoRefillEnabled', v_status = 'pending' and v_account.auto_refill_enabled,
        'ignored', false
    );
end
$$;

revoke execute on function billing.fail_refill(uuid, text, text) from public;
grant execute on function billing.fail_refill(uuid, text, text) to service_role;
