/*
 * Stripe: credits, reversals and webhook idempotency.
 *
 * Stripe delivers at least once and out of order. Every operation here is
 * idempotent on Stripe's own ids, and serialized per payment intent with a
 * transaction-level advisory lock, so that a refund or dispute that arrives
 * before the payment it reverses is recorded as pending and applied by
 * billing.credit_topup when the payment is credited: the balance ends the same
 * whatever the order. Amounts enter as integer cents.
 *
 * Lock order everywhere: payment-intent advisory lock, then the account row.
 */

create table public.stripe_events (
    event_id text primary key check (event_id <> ''),
    type text not null check (type <> ''),  -- noqa: RF04
    object_id text,
    received_at timestamptz not null default now()
);

comment on table public.stripe_events is 'Processed Stripe webhook events (replay protection).';

create index stripe_events_object_id_idx on public.stripe_events (object_id);

alter table public.stripe_events enable row level security;
-- No policy: workers only, through billing.record_stripe_event.

grant select on public.stripe_events to service_role;

create table public.payment_reversals (
    id uuid primary key default gen_random_uuid(),
    payment_intent_id text not null,
    -- null while the payment it reverses has not been credited yet
    user_id uuid references public.call_balance (user_id) on delete cascade,
    kind text not null check (kind in ('refund', 'dispute', 'dispute_won')),
    -- refund: 'cumulative' (one row per payment); dispute and dispute_won: the dispute id
    reference text not null,
    -- refund: the cumulative amount refunded so far; dispute: the disputed amount
    amount numeric(12, 2) not null check (amount > 0 and amount <= 10000),
    status text not null default 'pending' check (status in ('pending', 'applied', 'cancelled')),
    transaction_id uuid references public.balance_transactions (id),
    created_at timestamptz not null default now(),
    applied_at timestamptz,
    unique (payment_intent_id, kind, reference)
);

comment on table public.payment_reversals is
'Refunds and disputes by payment intent, including those that arrived before the credit.';

create index payment_reversals_user_id_idx on public.payment_reversals (user_id);
create index payment_reversals_transaction_id_idx on public.payment_reversals (transaction_id);

alter table public.payment_reversals enable row level security;
-- No policy: workers only, through the billing functions.

grant select on public.payment_reversals to service_role;

/* ------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------ */

create or replace function billing._lock_payment_intent(p_payment_intent_id text)
returns void
language sql
as $$
    select pg_catalog.pg_advisory_xact_lock(
        pg_catalog.hashtextextended('stripe:payment_intent:' || p_payment_intent_id, 0)
    )
$$;

revoke execute on function billing._lock_payment_intent(text) from public;

-- The credit entry of a payment intent, if it was credited.
create or replace function billing._payment_credit(p_payment_intent_id text)
returns public.balance_transactions
language sql
stable
as $$
    select bt.*
    from public.balance_transactions as bt
    where bt.idempotency_key = 'payment:' || p_payment_intent_id
$$;

revoke execute on function billing._payment_credit(text) from public;

-- Cents reversed so far for a payment intent's refunds (refund entries carry the intent).
create or replace function billing._refunded_cents(p_payment_intent_id text)
returns bigint
language sql
stable
as $$
    select coalesce(-sum(bt.amount) * 100, 0)::bigint
    from public.balance_transactions as bt
    where bt.stripe_payment_intent_id = p_payment_intent_id and bt.reason = 'refund'
$$;

revoke execute on function billing._refunded_cents(text) from public;

/*
 * Apply a refund level to a credited payment (intent locked, account locked):
 * debit the cumulative amount refunded minus what was already reversed,
 * capped at what was credited. Returns the cents reversed now.
 */
create or replace function billing._apply_refund(
    p_credit public.balance_transactions,
    p_amount_refunded_cents bigint,
    p_metadata jsonb
)
returns bigint
language plpgsql
as $$
declare
    v_target bigint := least(p_amount_refunded_cents, (p_credit.amount * 100)::bigint);
    v_done bigint := billing._refunded_cents(p_credit.stripe_payment_intent_id);
    v_delta bigint := v_target - v_done;
begin
    if v_delta <= 0 then
        return 0;
    end if;
    perform billing._post(
        p_credit.user_id, -(v_delta::numeric / 100), 'refund', 'refund',
        pg_catalog.format('Refund of payment %s', p_credit.stripe_payment_intent_id),
        'refund:' || p_credit.stripe_payment_intent_id || ':' || v_target,
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

-- Apply a lost dispute to a credited payment (intent and account locked); returns cents.
create or replace function billing._apply_dispute(
    p_credit public.balance_transactions,
    p_dispute_id text,
    p_amount_cents bigint
)
returns bigint
language plpgsql
as $$
declare
    v_cents bigint := least(p_amount_cents, (p_credit.amount * 100)::bigint);
    v_entry public.balance_transactions;
begin
    if exists (
        select from public.balance_transactions as bt
        where bt.idempotency_key = 'dispute:' || p_dispute_id
    ) then
        return 0;
    end if;
    v_entry := billing._post(
        p_credit.user_id, -(v_cents::numeric / 100), 'refund', 'dispute',
        pg_catalog.format('Dispute %s on payment %s', p_dispute_id,
            p_credit.stripe_payment_intent_id),
        'dispute:' || p_dispute_id,
        p_credit.stripe_payment_intent_id,
        pg_catalog.jsonb_build_object('dispute_id', p_dispute_id)
    );
    update public.payment_reversals as pr
    set status = 'applied', user_id = p_credit.user_id, transaction_id = v_entry.id,
        applied_at = billing.now()
    where
        pr.payment_intent_id = p_credit.stripe_payment_intent_id
        and pr.kind = 'dispute'
        and pr.reference = p_dispute_id;
    perform billing._alert(
        p_credit.user_id, 'dispute',
        pg_catalog.format('A payment of yours is disputed: $%s was removed from your balance.',
            (v_cents::numeric / 100)::numeric(12, 2)),
        pg_catalog.jsonb_build_object('paymentIntentId', p_credit.stripe_payment_intent_id,
            'disputeId', p_dispute_id, 'amount', (v_cents::numeric / 100)::numeric(12, 2))
    );
    return v_cents;
end
$$;

revoke execute on function billing._apply_dispute(public.balance_transactions, text, bigint)
from public;

/* ------------------------------------------------------------------------
 * billing.record_stripe_event: true the first time an event id is seen
 * ------------------------------------------------------------------------ */

create or replace function billing.record_stripe_event(
    p_event_id text,
    p_type text,
    p_object_id text
)
returns boolean
language plpgsql
security definer
set search_path = ''
as $$
begin
    perform billing._check_id(p_event_id, 'event id');
    perform billing._check_id(p_type, 'event type');
    if p_object_id is not null then
        perform billing._check_id(p_object_id, 'object id');
    end if;
    insert into public.stripe_events (event_id, type, object_id, received_at)
    values (p_event_id, p_type, p_object_id, billing.now())
    on conflict (event_id) do nothing;
    return found;
end
$$;

revoke execute on function billing.record_stripe_event(text, text, text) from public;
grant execute on function billing.record_stripe_event(text, text, text) to service_role;

/* ------------------------------------------------------------------------
 * billing.set_stripe_customer, billing.save_payment_method
 * ------------------------------------------------------------------------ */

create or replace function billing.set_stripe_customer(p_user_id uuid, p_customer_id text)
returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
    perform billing._check_id(p_customer_id, 'customer id');
    perform billing._lock_account(p_user_id);
    update public.call_balance as cb
    set stripe_customer_id = p_customer_id, updated_at = billing.now()
    where cb.user_id = p_user_id;
end
$$;

revoke execute on function billing.set_stripe_customer(uuid, text) from public;
grant execute on function billing.set_stripe_customer(uuid, text) to service_role;

create or replace function billing.save_payment_method(
    p_user_id uuid,
    p_customer_id text,
    p_payment_method_id text
)
returns void
language plpgsql
security definer
set search_path = ''
as $$
begin
    perform billing._check_id(p_customer_id, 'customer id');
    perform billing._check_id(p_payment_method_id, 'payment method id');
    perform billing._lock_account(p_user_id);
    update public.call_balance as cb
    set
        stripe_customer_id = p_customer_id,
        stripe_payment_method_id = p_payment_method_id,
        auto_refill_failures = 0,
        updated_at = billing.now()
    where cb.user_id = p_user_id;
end
$$;

revoke execute on function billing.save_payment_method(uuid, text, text) from public;
grant execute on function billing.save_payment_method(uuid, text, text) to service_role;

/* ------------------------------------------------------------------------
 * billing.credit_topup: credit a paid payment intent, once
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
 * billing.reverse_payment: a generic reversal by the caller's key
 * ------------------------------------------------------------------------ */

create or replace function billing.reverse_payment(
    p_user_id uuid,
    p_amount_cents bigint,
    p_idempotency_key text,
    p_reason text,
    p_metadata jsonb default '{}'::jsonb
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_amount numeric(12, 2) := billing._cents(p_amount_cents);
    v_key text;
    v_existing public.balance_transactions;
    v_entry public.balance_transactions;
    v_metadata jsonb := coalesce(p_metadata, '{}'::jsonb);
begin
    perform billing._check_id(p_idempotency_key, 'idempotency key');
    if p_reason is null or p_reason not in ('refund', 'dispute') then
        perform billing._raise('PT400', 'The reason must be refund or dispute.');
    end if;
    if p_user_id is null then
        perform billing._raise('PT400', 'The user id is required.');
    end if;
    if pg_catalog.jsonb_typeof(v_metadata) <> 'object' then
        perform billing._raise('PT400', 'The metadata must be a JSON object.');
    end if;
    v_key := 'reversal:' || p_idempotency_key;
    perform billing._lock_account(p_user_id);
    select bt.* into v_existing
    from public.balance_transactions as bt
    where bt.idempotency_key = v_key;
    if found then
        if v_existing.user_id <> p_user_id then
            perform billing._raise('PT409', 'This reversal was already applied to another account.');
        end if;
        return pg_catalog.jsonb_build_object(
            'transactionId', v_existing.id,
            'balance', (select cb.balance from public.call_balance as cb
                where cb.user_id = p_user_id),
            'duplicate', true
        );
    end if;
    v_entry := billing._post(
        p_user_id, -v_amount, 'refund', p_reason,
        case p_reason when 'dispute' then 'Payment disputed' else 'Payment refunded' end,
        v_key, nullif(v_metadata ->> 'payment_intent_id', ''), v_metadata
    );
    perform billing._alert(
        p_user_id, case p_reason when 'dispute' then 'dispute' else 'payment_reversed' end,
        pg_catalog.format('$%s was removed from your balance (%s).', v_amount, p_reason),
        pg_catalog.jsonb_build_object('amount', v_amount, 'transactionId', v_entry.id)
    );
    return pg_catalog.jsonb_build_object(
        'transactionId', v_entry.id, 'balance', v_entry.balance_after, 'duplicate', false
    );
end
$$;

revoke execute on function billing.reverse_payment(uuid, bigint, text, text, jsonb) from public;
grant execute on function billing.reverse_payment(uuid, bigint, text, text, jsonb)
to service_role;

/* ------------------------------------------------------------------------
 * billing.reverse_refund: Stripe's cumulative amount_refunded, in any order
 * ------------------------------------------------------------------------ */

create or replace function billing.reverse_refund(
    p_payment_intent_id text,
    p_amount_refunded_cents bigint,
    p_metadata jsonb default '{}'::jsonb
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_cumulative numeric(12, 2) := billing._cents(p_amount_refunded_cents, 'amount refunded');
    v_credit public.balance_transactions;
    v_reversed bigint;
begin
    perform billing._check_id(p_payment_intent_id, 'payment intent id');
    perform billing._lock_payment_intent(p_payment_intent_id);
    v_credit := billing._payment_credit(p_payment_intent_id);
    if v_credit.id is null then
        insert into public.payment_reversals (payment_intent_id, kind, reference, amount, created_at)
        values (p_payment_intent_id, 'refund', 'cumulative', v_cumulative, billing.now())
        on conflict (payment_intent_id, kind, reference)
        do update set amount = greatest(public.payment_reversals.amount, excluded.amount);
        return pg_catalog.jsonb_build_object('reversedCents', 0, 'balance', null, 'pending', true);
    end if;
    perform billing._lock_account(v_credit.user_id);
    v_reversed := billing._apply_refund(v_credit, p_amount_refunded_cents, p_metadata);
    return pg_catalog.jsonb_build_object(
        'reversedCents', v_reversed,
        'balance', (select cb.balance from public.call_balance as cb
            where cb.user_id = v_credit.user_id),
        'pending', false
    );
end
$$;

revoke execute on function billing.reverse_refund(text, bigint, jsonb) from public;
grant execute on function billing.reverse_refund(text, bigint, jsonb) to service_role;

/* ------------------------------------------------------------------------
 * billing.reverse_dispute, billing.restore_dispute
 * ------------------------------------------------------------------------ */

create or replace function billing.reverse_dispute(
    p_payment_intent_id text,
    p_dispute_id text,
    p_amount_cents bigint
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_amount numeric(12, 2) := billing._cents(p_amount_cents, 'disputed amount');
    v_credit public.balance_transactions;
    v_reversed bigint;
begin
    perform billing._check_id(p_payment_intent_id, 'payment intent id');
    perform billing._check_id(p_dispute_id, 'dispute id');
    perform billing._lock_payment_intent(p_payment_intent_id);
    v_credit := billing._payment_credit(p_payment_intent_id);
    -- A dispute already closed as won (events out of order) takes nothing.
    if exists (
        select from public.payment_reversals as pr
        where
            pr.payment_intent_id = p_payment_intent_id
            and pr.kind = 'dispute_won' and pr.reference = p_dispute_id
    ) then
        return pg_catalog.jsonb_build_object(
            'reversedCents', 0,
            'balance', (select cb.balance from public.call_balance as cb
                where cb.user_id = v_credit.user_id),
            'pending', false
        );
    end if;
    insert into public.payment_reversals (
        payment_intent_id, user_id, kind, reference, amount, created_at
    ) values (
        p_payment_intent_id, v_credit.user_id, 'dispute', p_dispute_id, v_amount, billing.now()
    )
    on conflict (payment_intent_id, kind, reference) do nothing;
    if v_credit.id is null then
        return pg_catalog.jsonb_build_object('reversedCents', 0, 'balance', null, 'pending', true);
    end if;
    perform billing._lock_account(v_credit.user_id);
    v_reversed := billing._apply_dispute(v_credit, p_dispute_id, p_amount_cents);
    return pg_catalog.jsonb_build_object(
        'reversedCents', v_reversed,
        'balance', (select cb.balance from public.call_balance as cb
            where cb.user_id = v_credit.user_id),
        'pending', false
    );
end
$$;

revoke execute on function billing.reverse_dispute(text, text, bigint) from public;
grant execute on function billing.reverse_dispute(text, text, bigint) to service_role;

create or replace function billing.restore_dispute(
    p_payment_intent_id text,
    p_dispute_id text,
    p_amount_cents bigint
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_amount numeric(12, 2) := billing._cents(p_amount_cents, 'restored amount');
    v_credit public.balance_transactions;
    v_dispute_entry public.balance_transactions;
    v_entry public.balance_transactions;
begin
    perform billing._check_id(p_payment_intent_id, 'payment intent id');
    perform billing._check_id(p_dispute_id, 'dispute id');
    perform billing._lock_payment_intent(p_payment_intent_id);
    v_credit := billing._payment_credit(p_payment_intent_id);
    insert into public.payment_reversals (
        payment_intent_id, user_id, kind, reference, amount, status, created_at
    ) values (
        p_payment_intent_id, v_credit.user_id, 'dispute_won', p_dispute_id, v_amount, 'applied',
        billing.now()
    )
    on conflict (payment_intent_id, kind, reference) do nothing;
    -- Won before it was ever applied: the pending dispute is simply dropped.
    update public.payment_reversals as pr
    set status = 'cancelled'
    where
        pr.payment_intent_id = p_payment_intent_id
        and pr.kind = 'dispute' and pr.reference = p_dispute_id and pr.status = 'pending';
    select bt.* into v_dispute_entry
    from public.balance_transactions as bt
    where bt.idempotency_key = 'dispute:' || p_dispute_id;
    if v_dispute_entry.id is null then
        return pg_catalog.jsonb_build_object(
            'restoredCents', 0,
            'balance', (select cb.balance from public.call_balance as cb
                where cb.user_id = v_credit.user_id),
            'pending', v_credit.id is null,
            'duplicate', false
        );
    end if;
    perform billing._lock_account(v_dispute_entry.user_id);
    if exists (
        select from public.balance_transactions as bt
        where bt.idempotency_key = 'dispute_won:' || p_dispute_id
    ) then
        return pg_catalog.jsonb_build_object(
            'restoredCents', 0,
            'balance', (select cb.balance from public.call_balance as cb
                where cb.user_id = v_dispute_entry.user_id),
            'pending', false,
            'duplicate', true
        );
    end if;
    -- Re-credit what the dispute took, never more.
    v_entry := billing._post(
        v_dispute_entry.user_id, -v_dispute_entry.amount, 'credit', 'dispute_won',
        pg_catalog.format('Dispute %s won', p_dispute_id),
        'dispute_won:' || p_dispute_id, p_payment_intent_id,
        pg_catalog.jsonb_build_object('dispute_id', p_dispute_id)
    );
    perform billing._alert(
        v_dispute_entry.user_id, 'dispute_won',
        pg_catalog.format('A dispute was resolved in your favour: $%s is back in your balance.',
            -v_dispute_entry.amount),
        pg_catalog.jsonb_build_object('disputeId', p_dispute_id, 'amount', -v_dispute_entry.amount)
    );
    return pg_catalog.jsonb_build_object(
        'restoredCents', (-v_dispute_entry.amount * 100)::bigint,
        'balance', v_entry.balance_after,
        'pending', false,
        'duplicate', false
    );
end
$$;

revoke execute on function billing.restore_dispute(text, text, bigint) from public;
grant execute on function billing.restore_dispute(text, text, bigint) to service_role;
