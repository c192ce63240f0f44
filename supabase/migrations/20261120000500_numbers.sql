/*
 * Phone numbers: a two-phase purchase and monthly renewal.
 *
 * reserve_number decides the price and charges it (or claims the plan's free
 * number) before the provider is called; confirm_number activates the number
 * with the provider's sid; cancel_number gives the charge and the free claim
 * back when the provider failed. renew_numbers charges each due paid number
 * once per period (the period is in the ledger's idempotency key); when the
 * balance is short the number goes past_due, and after a 7-day grace period
 * it is marked for release, which workers carry out at the provider.
 *
 * Lock order: the account row first, then the number row. Funds held by calls
 * in progress (billing._held_amount, with the calls) are not available here.
 */

create table public.user_phone_numbers (
    id uuid primary key default gen_random_uuid(),
    user_id uuid not null references public.call_balance (user_id) on delete cascade,
    -- null while reserved by area code, until the provider names the number
    phone_number text check (phone_number ~ '^\+[1-9][0-9]{6,14}$'),
    provider_sid text check (provider_sid <> ''),
    is_free boolean not null default false,
    status text not null default 'pending'
    check (status in ('pending', 'active', 'past_due', 'released', 'cancelled')),
    monthly_price numeric(12, 2) not null default 0 check (monthly_price >= 0),
    charged_amount numeric(12, 2) not null default 0 check (charged_amount >= 0),
    purchase_transaction_id uuid references public.balance_transactions (id),
    next_renewal_at timestamptz,
    past_due_since timestamptz,
    release_requested_at timestamptz,
    release_claimed_at timestamptz,
    activated_at timestamptz,
    released_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint user_phone_numbers_free_is_free check (not is_free or charged_amount = 0)
);

comment on table public.user_phone_numbers is
'Numbers bought by users: pending → active ⇄ past_due → released (or cancelled).';

create index user_phone_numbers_user_id_idx on public.user_phone_numbers (user_id, status);

-- One live owner per number.
create unique index user_phone_numbers_live_number
on public.user_phone_numbers (phone_number)
where status in ('pending', 'active', 'past_due');

create index user_phone_numbers_due_idx
on public.user_phone_numbers (next_renewal_at)
where status in ('active', 'past_due');

create index user_phone_numbers_release_idx
on public.user_phone_numbers (release_requested_at)
where release_requested_at is not null and status <> 'released';

create index user_phone_numbers_purchase_transaction_id_idx
on public.user_phone_numbers (purchase_transaction_id);

alter table public.user_phone_numbers enable row level security;

create policy "Users can read their own phone numbers"  -- noqa: RF05
on public.user_phone_numbers
for select
to authenticated
using ((select auth.uid()) = user_id);

grant select on public.user_phone_numbers to authenticated, service_role;

/* ------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------ */

-- The number as callers see it.
create or replace function billing._number_json(p_number public.user_phone_numbers)
returns jsonb
language sql
immutable
as $$
    select pg_catalog.jsonb_build_object(
        'id', p_number.id,
        'userId', p_number.user_id,
        'phoneNumber', p_number.phone_number,
        'providerSid', p_number.provider_sid,
        'isFree', p_number.is_free,
        'status', p_number.status,
        'monthlyPrice', p_number.monthly_price,
        'chargedAmount', p_number.charged_amount,
        'nextRenewalAt', p_number.next_renewal_at,
        'pastDueSince', p_number.past_due_since,
        'releaseRequestedAt', p_number.release_requested_at
    )
$$;

revoke execute on function billing._number_json(public.user_phone_numbers) from public;

/* ------------------------------------------------------------------------
 * billing.number_owner
 * ------------------------------------------------------------------------ */

create or replace function billing.number_owner(p_phone_number text)
returns uuid
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
    perform billing._check_phone(p_phone_number);
    return (
        select n.user_id
        from public.user_phone_numbers as n
        where n.phone_number = p_phone_number and n.status in ('active', 'past_due')
    );
end
$$;

revoke execute on function billing.number_owner(text) from public;
grant execute on function billing.number_owner(text) to service_role;

/* ------------------------------------------------------------------------
 * billing.reserve_number
 * ------------------------------------------------------------------------ */

create or replace function billing.reserve_number(p_user_id uuid, p_phone_number text)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_account public.call_balance;
    v_plan public.billing_plans;
    v_available numeric(12, 2);
    v_free_available integer;
    v_min_required numeric(12, 2);
    v_id uuid := gen_random_uuid();
    v_entry public.balance_transactions;
    v_now timestamptz := billing.now();
begin
    if p_user_id is null then
        perform billing._raise('PT400', 'The user id is required.');
    end if;
    if p_phone_number is not null then
        perform billing._check_phone(p_phone_number);
    end if;
    v_account := billing._lock_account(p_user_id);
    select p.* into v_plan from public.billing_plans as p where p.id = v_account.plan_id;
    if v_plan.number_monthly_price is null then
        perform billing._raise('PT403',
            pg_catalog.format('The %s plan does not include phone numbers.', v_plan.name));
    end if;
    if p_phone_number is not null and exists (
        select from public.user_phone_numbers as n
        where n.phone_number = p_phone_number and n.status in ('pending', 'active', 'past_due')
    ) then
        perform billing._raise('PT409', 'This phone number is already taken.');
    end if;

    if v_plan.free_numbers > 0 and not v_account.has_claimed_free_number then
        update public.call_balance as cb
        set has_claimed_free_number = true, updated_at = v_now
        where cb.user_id = p_user_id;
        insert into public.user_phone_numbers (
            id, user_id, phone_number, is_free, status, monthly_price, charged_amount,
            created_at, updated_at
        ) values (
            v_id, p_user_id, p_phone_number, true, 'pending', 0, 0, v_now, v_now
        );
        return pg_catalog.jsonb_build_object('purchaseId', v_id, 'isFree', true, 'charged', 0);
    end if;

    v_available := v_account.balance - billing._held_amount(p_user_id);
    v_free_available := v_account.free_minutes_remaining - billing._held_free_minutes(p_user_id);
    v_min_required := case
        when v_free_available <= 0
            then greatest(v_plan.number_monthly_price, v_plan.min_balance)
        else v_plan.number_monthly_price
    end;
    if v_available < v_min_required then
        raise exception using
            errcode = 'PT402',
            message = pg_catalog.format(
                'Insufficient balance: a number costs $%s per month and needs a balance of '
                || 'at least $%s. Top up to continue.',
                v_plan.number_monthly_price, v_min_required),
            detail = pg_catalog.jsonb_build_object(
                'minRequired', v_min_required,
                'price', v_plan.number_monthly_price,
                'balance', v_account.balance
            )::text;
    end if;
    v_entry := billing._post(
        p_user_id, -v_plan.number_monthly_price, 'debit', 'number_purchase',
        pg_catalog.format('Phone number %s, first month', coalesce(p_phone_number, '')),
        'number:' || v_id || ':purchase', null,
        pg_catalog.jsonb_build_object('number_id', v_id, 'phone_number', p_phone_number)
    );
    insert into public.user_phone_numbers (
        id, user_id, phone_number, is_free, status, monthly_price, charged_amount,
        purchase_transaction_id, created_at, updated_at
    ) values (
        v_id, p_user_id, p_phone_number, false, 'pending', v_plan.number_monthly_price,
        v_plan.number_monthly_price, v_entry.id, v_now, v_now
    );
    perform billing._after_debit(p_user_id, v_entry.balance_before);
    return pg_catalog.jsonb_build_object(
        'purchaseId', v_id, 'isFree', false, 'charged', v_plan.number_monthly_price
    );
end
$$;

revoke execute on function billing.reserve_number(uuid, text) from public;
grant execute on function billing.reserve_number(uuid, text) to service_role;

/* ------------------------------------------------------------------------
 * billing.confirm_number, billing.cancel_number
 * ------------------------------------------------------------------------ */

create or replace function billing.confirm_number(
    p_purchase_id uuid,
    p_provider_sid text,
    p_phone_number text default null
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_user_id uuid;
    v_number public.user_phone_numbers;
    v_now timestamptz := billing.now();
begin
    if p_purchase_id is null then
        perform billing._raise('PT400', 'The purchase id is required.');
    end if;
    perform billing._check_id(p_provider_sid, 'provider sid');
    if p_phone_number is not null then
        perform billing._check_phone(p_phone_number);
    end if;
    select n.user_id into v_user_id from public.user_phone_numbers as n where n.id = p_purchase_id;
    if not found then
        perform billing._raise('PT404', 'No such number purchase.');
    end if;
    perform billing._lock_account(v_user_id);
    select n.* into v_number from public.user_phone_numbers as n where n.id = p_purchase_id for update;
    if v_number.status in ('active', 'past_due') and v_number.provider_sid = p_provider_sid then
        return billing._number_json(v_number);
    end if;
    if v_number.status <> 'pending' then
        perform billing._raise('PT409',
            pg_catalog.format('This number purchase is %s and cannot be confirmed.',
                v_number.status));
    end if;
    if v_number.phone_number is null and p_phone_number is null then
        perform billing._raise('PT400', 'The phone number bought is required.');
    end if;
    if v_number.phone_number is not null and p_phone_number is not null
        and v_number.phone_number <> p_phone_number then
        perform billing._raise('PT409', 'The phone number differs from the one reserved.');
    end if;
    if v_number.phone_number is null and exists (
        select from public.user_phone_numbers as n
        where n.phone_number = p_phone_number and n.status in ('pending', 'active', 'past_due')
    ) then
        perform billing._raise('PT409', 'This phone number is already taken.');
    end if;
    update public.user_phone_numbers as n
    set
        status = 'active',
        provider_sid = p_provider_sid,
        phone_number = coalesce(n.phone_number, p_phone_number),
        activated_at = v_now,
        next_renewal_at = v_now + interval '1 month',
        updated_at = v_now
    where n.id = p_purchase_id
    returning n.* into v_number;
    return billing._number_json(v_number);
end
$$;

revoke execute on function billing.confirm_number(uuid, text, text) from public;
grant execute on function billing.confirm_number(uuid, text, text) to service_role;

create or replace function billing.cancel_number(p_purchase_id uuid, p_reason text)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_user_id uuid;
    v_number public.user_phone_numbers;
    v_entry public.balance_transactions;
    v_now timestamptz := billing.now();
begin
    if p_purchase_id is null then
        perform billing._raise('PT400', 'The purchase id is required.');
    end if;
    select n.user_id into v_user_id from public.user_phone_numbers as n where n.id = p_purchase_id;
    if not found then
        perform billing._raise('PT404', 'No such number purchase.');
    end if;
    perform billing._lock_account(v_user_id);
    select n.* into v_number from public.user_phone_numbers as n where n.id = p_purchase_id for update;
    if v_number.status = 'cancelled' then
        return billing._number_json(v_number) || '{"duplicate": true}'::jsonb;
    end if;
    if v_number.status <> 'pending' then
        perform billing._raise('PT409',
            pg_catalog.format('This number is %s; release it instead of cancelling.',
                v_number.status));
    end if;
    if v_number.charged_amount > 0 then
        v_entry := billing._post(
            v_user_id, v_number.charged_amount, 'credit', 'number_cancel',
            pg_catalog.format('Number purchase cancelled: %s',
                coalesce(nullif(pg_catalog.btrim(p_reason), ''), 'not completed')),
            'number:' || v_number.id || ':cancel', null,
            pg_catalog.jsonb_build_object('number_id', v_number.id,
                'reason', pg_catalog.left(p_reason, 500))
        );
    end if;
    if v_number.is_free then
        update public.call_balance as cb
        set has_claimed_free_number = false, updated_at = v_now
        where cb.user_id = v_user_id;
    end if;
    update public.user_phone_numbers as n
    set status = 'cancelled', released_at = v_now, updated_at = v_now
    where n.id = p_purchase_id
    returning n.* into v_number;
    return billing._number_json(v_number) || '{"duplicate": false}'::jsonb;
end
$$;

revoke execute on function billing.cancel_number(uuid, text) from public;
grant execute on function billing.cancel_number(uuid, text) to service_role;

/* ------------------------------------------------------------------------
 * billing.renew_numbers
 * ------------------------------------------------------------------------ */

create or replace function billing.renew_numbers(p_now timestamptz default null)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_now timestamptz := coalesce(p_now, billing.now());
    v_due record;
    v_account public.call_balance;
    v_number public.user_phone_numbers;
    v_available numeric(12, 2);
    v_entry public.balance_transactions;
    v_renewed integer := 0;
    v_past_due integer := 0;
    v_marked integer := 0;
begin
    for v_due in
        select n.id, n.user_id
        from public.user_phone_numbers as n
        where
            n.status in ('active', 'past_due')
            and n.next_renewal_at <= v_now
            and n.release_requested_at is null
        order by n.user_id, n.id
    loop
        v_account := billing._lock_account(v_due.user_id);
        select n.* into v_number
        from public.user_phone_numbers as n
        where n.id = v_due.id
        for update;
        -- Another run may have handled it meanwhile.
        continue when v_number.status not in ('active', 'past_due')
            or v_number.next_renewal_at > v_now
            or v_number.release_requested_at is not null;

        if v_number.is_free or v_number.monthly_price = 0 then
            update public.user_phone_numbers as n
            set next_renewal_at = n.next_renewal_at + interval '1 month', updated_at = v_now
            where n.id = v_number.id;
            v_renewed := v_renewed + 1;
            continue;
        end if;

        v_available := v_account.balance - billing._held_amount(v_due.user_id);
        if v_available >= v_number.monthly_price then
            v_entry := billing._post(
                v_due.user_id, -v_number.monthly_price, 'debit', 'number_renewal',
                pg_catalog.format('Phone number %s, month from %s', v_number.phone_number,
                    pg_catalog.to_char(v_number.next_renewal_at at time zone 'UTC', 'YYYY-MM-DD')),
                'number:' || v_number.id || ':renewal:'
                || pg_catalog.to_char(v_number.next_renewal_at at time zone 'UTC',
                    'YYYY-MM-DD"T"HH24:MI:SS'),
                null,
                pg_catalog.jsonb_build_object('number_id', v_number.id,
                    'period_start', v_number.next_renewal_at)
            );
            update public.user_phone_numbers as n
            set
                status = 'active',
                next_renewal_at = n.next_renewal_at + interval '1 month',
                past_due_since = null,
                updated_at = v_now
            where n.id = v_number.id;
            perform billing._after_debit(v_due.user_id, v_entry.balance_before);
            v_renewed := v_renewed + 1;
        elsif v_number.status = 'active' then
            update public.user_phone_numbers as n
            set status = 'past_due', past_due_since = v_now, updated_at = v_now
            where n.id = v_number.id;
            perform billing._alert(
                v_due.user_id, 'number_past_due',
                pg_catalog.format(
                    'Your number %s could not be renewed ($%s). Top up within 7 days to keep it.',
                    v_number.phone_number, v_number.monthly_price),
                pg_catalog.jsonb_build_object('numberId', v_number.id,
                    'phoneNumber', v_number.phone_number, 'price', v_number.monthly_price),
                'number_past_due:' || v_number.id || ':' || v_number.next_renewal_at
            );
            v_past_due := v_past_due + 1;
        elsif v_number.past_due_since <= v_now - interval '7 days' then
            update public.user_phone_numbers as n
            set release_requested_at = v_now, updated_at = v_now
            where n.id = v_number.id;
            perform billing._alert(
                v_due.user_id, 'number_released',
                pg_catalog.format('Your number %s is being released: it was unpaid for 7 days.',
                    v_number.phone_number),
                pg_catalog.jsonb_build_object('numberId', v_number.id,
                    'phoneNumber', v_number.phone_number)
            );
            v_marked := v_marked + 1;
        end if;
    end loop;
    return pg_catalog.jsonb_build_object(
        'renewed', v_renewed, 'pastDue', v_past_due, 'markedForRelease', v_marked
    );
end
$$;

revoke execute on function billing.renew_numbers(timestamptz) from public;
grant execute on function billing.renew_numbers(timestamptz) to service_role;

/* ------------------------------------------------------------------------
 * billing.numbers_to_release, billing.mark_number_released
 * ------------------------------------------------------------------------ */

-- Numbers marked for release, each handed to one worker (reclaimable after 10 minutes).
create or replace function billing.numbers_to_release(p_limit integer default 50)
returns setof public.user_phone_numbers
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
        select n.id
        from public.user_phone_numbers as n
        where
            n.release_requested_at is not null
            and n.status <> 'released'
            and (n.release_claimed_at is null or n.release_claimed_at < v_now - interval '10 minutes')
        order by n.release_requested_at, n.id
        limit p_limit
        for update of n skip locked
    ),

    claimed as (
        update public.user_phone_numbers as n
        set release_claimed_at = v_now, updated_at = v_now
        from picked
        where n.id = picked.id
        returning n.*
    )

    select * from claimed;
end
$$;

revoke execute on function billing.numbers_to_release(integer) from public;
grant execute on function billing.numbers_to_release(integer) to service_role;

create or replace function billing.mark_number_released(p_number_id uuid)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_user_id uuid;
    v_now timestamptz := billing.now();
begin
    if p_number_id is null then
        perform billing._raise('PT400', 'The number id is required.');
    end if;
    select n.user_id into v_user_id from public.user_phone_numbers as n where n.id = p_number_id;
    if not found then
        perform billing._raise('PT404', 'No such number.');
    end if;
    perform billing._lock_account(v_user_id);
    update public.user_phone_numbers as n
    set
        status = 'released',
        released_at = coalesce(n.released_at, v_now),
        release_requested_at = coalesce(n.release_requested_at, v_now),
        updated_at = v_now
    where n.id = p_number_id and n.status <> 'cancelled';
end
$$;

revoke execute on function billing.mark_number_released(uuid) from public;
grant execute on function billing.mark_number_released(uuid) to service_role;
