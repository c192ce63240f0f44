/*
 * The ledger.
 *
 * Every change of a balance is one row here, written in the same transaction
 * as the balance, under the account's row lock. Rows are never updated or
 * deleted, not even by service_role. Invariants, backed by constraints:
 *   balance_after = balance_before + amount            (check)
 *   one row per idempotency key                         (unique)
 *   credits are positive, debits and refunds negative   (same check)
 *   no entry is zero or more than $10,000               (domain ledger_amount)
 * and, checked by monitoring.ledger_drift: balance = sum(amount) per account.
 */

/*
 * The ledger's vocabularies are domains rather than table checks: a domain's
 * check is compiled once per session, a table's check constraints are read
 * again for every statement that writes the table, and this one is written
 * by every paid call.
 */
create domain public.transaction_type as text
check (value in ('credit', 'debit', 'refund'));

create domain public.transaction_reason as text
check (
    value in (
        'topup', 'auto_refill', 'call', 'number_purchase', 'number_renewal',
        'number_cancel', 'refund', 'dispute', 'dispute_won', 'adjustment'
    )
);

-- A ledger amount: never zero, at most $10,000 either way in one operation.
create domain public.ledger_amount as numeric(12, 2)
check (value <> 0 and value between -10000 and 10000);

-- Entry ids are UUIDv7-style (time first), so the primary key grows at its right edge
-- instead of touching a random page of the index for every entry.
create or replace function billing._uuid_v7()
returns uuid
language sql
volatile
as $$
    select pg_catalog.encode(
        pg_catalog.set_bit(
            pg_catalog.set_bit(
                pg_catalog.overlay(
                    pg_catalog.uuid_send(gen_random_uuid()),
                    pg_catalog.substring(
                        pg_catalog.int8send(
                            (pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()) * 1000)::bigint
                        ),
                        3
                    ),
                    1,
                    6
                ),
                52, 1
            ),
            53, 1
        ),
        'hex'
    )::uuid
$$;

revoke execute on function billing._uuid_v7() from public;

create table public.balance_transactions (
    id uuid primary key default billing._uuid_v7(),
    user_id uuid not null references public.call_balance (user_id),
    amount public.ledger_amount not null,
    type public.transaction_type not null,  -- noqa: RF04
    reason public.transaction_reason not null,
    description text not null default '',  -- noqa: RF04
    balance_before numeric(12, 2) not null,
    balance_after numeric(12, 2) not null,
    stripe_payment_intent_id text,
    idempotency_key text not null unique,
    metadata jsonb not null default '{}'::jsonb,
    created_at timestamptz not null default now(),
    -- One check (one constraint is cheaper to apply than two, on every entry written):
    -- the arithmetic, and credits positive, debits and refunds negative.
    constraint balance_transactions_entry_rule check (
        balance_after = balance_before + amount and (amount > 0) = (type = 'credit')
    )
);

comment on table public.balance_transactions is
'The append-only ledger: one row per balance change, idempotent on idempotency_key.';

create index balance_transactions_user_id_created_at_idx
on public.balance_transactions (user_id, created_at desc);

create index balance_transactions_payment_intent_idx
on public.balance_transactions (stripe_payment_intent_id)
where stripe_payment_intent_id is not null;

-- The month's auto-refills of an account (the monthly cap), without reading its calls.
create index balance_transactions_auto_refills_idx
on public.balance_transactions (user_id, created_at)
where reason = 'auto_refill';

alter table public.balance_transactions enable row level security;

create policy "Users can read their own transactions"  -- noqa: RF05
on public.balance_transactions
for select
to authenticated
using ((select auth.uid()) = user_id);

grant select on public.balance_transactions to authenticated, service_role;

/* Append-only: refuse update, delete and truncate for everyone. */

create or replace function billing.refuse_ledger_change()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
    raise exception using
        errcode = 'PT403',
        message = 'The ledger is append-only: balance_transactions rows cannot be changed.',
        hint = 'Correct a mistake with a new, opposite entry.';
end
$$;

revoke execute on function billing.refuse_ledger_change() from public;

create trigger balance_transactions_append_only
before update or delete on public.balance_transactions
for each row execute function billing.refuse_ledger_change();

create trigger balance_transactions_no_truncate
before truncate on public.balance_transactions
for each statement execute function billing.refuse_ledger_change();

/*
 * Post one entry to a locked account: append the ledger row with the previous
 * and new balance, and move the cached balance. The caller holds the row lock
 * (billing._lock_account) and has checked the idempotency key; the unique
 * constraint is the backstop.
 */
create or replace function billing._post(
    p_user_id uuid,
    p_amount numeric,
    p_type text,
    p_reason text,
    p_description text,
    p_idempotency_key text,
    p_payment_intent_id text default null,
    p_metadata jsonb default '{}'::jsonb
)
returns public.balance_transactions
language plpgsql
as $$
declare
    v_before numeric(12, 2);
    v_entry public.balance_transactions;
    v_now timestamptz := billing.now();
begin
    update public.call_balance as cb
    set balance = cb.balance + p_amount, updated_at = v_now
    where cb.user_id = p_user_id
    returning cb.balance - p_amount into v_before;
    if not found then
        perform billing._raise('PT404', 'No such account.');
    end if;
    insert into public.balance_transactions (
        user_id, amount, type, reason, description, balance_before, balance_after,
        stripe_payment_intent_id, idempotency_key, metadata, created_at
    ) values (
        p_user_id, p_amount, p_type, p_reason, coalesce(p_description, ''), v_before,
        v_before + p_amount, p_payment_intent_id, p_idempotency_key,
        coalesce(p_metadata, '{}'::jsonb), v_now
    )
    returning * into v_entry;
    return v_entry;
end
$$;

revoke execute on function billing._post(uuid, numeric, text, text, text, text, text, jsonb)
from public;
