/*
 * Plans and accounts.
 *
 * Two pricing plans (classic = seed 000, starter = seed 003), one account row
 * per user in public.call_balance, and the private schema `billing` that holds
 * every money operation. `billing` is not exposed through the API: only
 * service_role may use it, and only the functions granted to it one by one.
 *
 * Time: every rule reads the clock through billing.now(), which is now()
 * unless the transaction sets `billing.now` (tests use it to step into a new
 * month); the setting is ignored for sessions that come through PostgREST.
 *
 * search_path: every function an API role may execute is security definer
 * with `set search_path = ''`. The internal helpers (billing._*, billing.now)
 * deliberately have no SET clause: nobody is granted them, so they only ever
 * run inside those functions, under their empty search_path, and they
 * qualify every name anyway. A SET clause costs ~40 µs per call and stops SQL
 * functions from being inlined, and the helpers run many times per call
 * settled. (Supabase's function_search_path_mutable lint lists them: a
 * deliberate exception.)
 */

create schema if not exists billing;
comment on schema billing is
'Money operations for workers (service_role). Not exposed through the API.';

revoke all on schema billing from public;
grant usage on schema billing to service_role;

alter default privileges in schema billing
revoke execute on functions from public;

/* ------------------------------------------------------------------------
 * Clock
 * ------------------------------------------------------------------------ */

create or replace function billing.now()
returns timestamptz
language sql
stable
as $$
    select case
        when session_user::text <> 'authenticator'
            then coalesce(
                nullif(pg_catalog.current_setting('billing.now', true), '')::timestamptz,
                pg_catalog.now()
            )
        else pg_catalog.now()
    end
$$;

comment on function billing.now() is
'The clock of every billing rule: now(), or the transaction setting billing.now when set.';

revoke execute on function billing.now() from public;

/* ------------------------------------------------------------------------
 * Plans
 * ------------------------------------------------------------------------ */

create table public.billing_plans (
    id text primary key check (id ~ '^[a-z][a-z0-9_]{0,31}$'),
    name text not null,  -- noqa: RF04
    description text not null default '',  -- noqa: RF04
    -- price of one started minute of a call
    price_per_minute numeric(12, 2) not null check (price_per_minute > 0),
    -- free minutes granted each calendar month (UTC), no rollover
    free_minutes_monthly integer not null default 0 check (free_minutes_monthly >= 0),
    -- balance needed to start a call or buy a paid number when free minutes are 0
    -- (every plan also needs enough to pay one minute: classic's "balance > $0")
    min_balance numeric(12, 2) not null default 0 check (min_balance >= 0),
    -- null: the plan sells no numbers (and calls need none)
    number_monthly_price numeric(12, 2) check (number_monthly_price > 0),
    free_numbers integer not null default 0 check (free_numbers between 0 and 1),
    requires_active_number boolean not null default false,
    top_up_presets numeric(12, 2) [] not null,
    -- null: only the presets may be bought
    custom_top_up_min numeric(12, 2) check (custom_top_up_min > 0),
    auto_refill_amounts numeric(12, 2) [] not null,
    default_auto_refill_threshold numeric(12, 2) not null
    check (default_auto_refill_threshold between 5 and 500),
    -- status GOOD at or above this balance (LOW is below the account's threshold)
    good_balance numeric(12, 2) not null default 50 check (good_balance > 0),
    is_default boolean not null default false,
    is_active boolean not null default true,
    created_at timestamptz not null default now(),
    constraint billing_plans_presets_present check (cardinality(top_up_presets) > 0),
    constraint billing_plans_refill_amounts_present check (cardinality(auto_refill_amounts) > 0),
    constraint billing_plans_number_rules check (
        (number_monthly_price is not null or (free_numbers = 0 and not requires_active_number))
    )
);

comment on table public.billing_plans is
'Pricing plans. Exactly one row is the default for new accounts.';

-- Exactly one default plan: at most one by this index, at least one by the seed below.
create unique index billing_plans_one_default on public.billing_plans (is_default)
where is_default;

insert into public.billing_plans (
    id, name, description, price_per_minute, free_minutes_monthly, min_balance,
    number_monthly_price, free_numbers, requires_active_number, top_up_presets,
    custom_top_up_min, auto_refill_amounts, default_auto_refill_threshold, good_balance,
    is_default
) values
(
    'classic', 'Classic', 'Pay as you go: $0.10 per minute, rounded up per call.',
    0.10, 0, 0.00, null, 0, false, array[50, 100]::numeric(12, 2) [],
    null, array[50, 100]::numeric(12, 2) [], 10, 50, false
),
(
    'starter', 'Starter',
    '$0.02 per minute after 200 free minutes each month; numbers $2/month, the first one free.',
    0.02, 200, 5.00, 2.00, 1, true, array[5, 10]::numeric(12, 2) [],
    5.00, array[50, 100]::numeric(12, 2) [], 10, 50, true
);

alter table public.billing_plans enable row level security;

-- Plans are the price list: every signed-in user may read all of them.
create policy "Signed-in users can read the plans"  -- noqa: RF05
on public.billing_plans
for select
to authenticated
using (true);

grant select on public.billing_plans to authenticated, service_role;

/* ------------------------------------------------------------------------
 * Accounts
 * ------------------------------------------------------------------------ */

/*
 * Single-column rules of the hot tables are domains: a domain's check is
 * compiled once per session and runs only when a value is assigned, while a
 * table's check constraints are read again and all evaluated on every write
 * of a row — and call_balance is written by every paid call.
 */
create domain public.minute_count as integer check (value >= 0);

create domain public.refill_threshold as numeric(12, 2) check (value between 5 and 500);

create domain public.refill_amount as numeric(12, 2) check (value > 0 and value <= 10000);

create domain public.refill_cap as numeric(12, 2) check (value >= 0 and value <= 10000);

create table public.call_balance (
    id uuid primary key default gen_random_uuid(),
    user_id uuid not null unique references auth.users (id) on delete cascade,
    plan_id text not null references public.billing_plans (id),
    balance numeric(12, 2) not null default 0,
    free_minutes_remaining public.minute_count not null default 0,
    free_minutes_last_reset timestamptz not null default now(),
    has_claimed_free_number boolean not null default false,
    auto_refill_enabled boolean not null default false,
    auto_refill_threshold public.refill_threshold not null default 10,
    auto_refill_amount public.refill_amount not null default 50,
    -- auto-refill charges allowed per calendar month (UTC); reaching it pauses refills
    auto_refill_monthly_cap public.refill_cap not null default 500,
    -- consecutive failed refill attempts; 3 turn auto-refill off
    auto_refill_failures integer not null default 0,
    last_refill_at timestamptz,
    stripe_customer_id text,
    stripe_payment_method_id text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
)
-- Room on each page for the new version of a row: balance updates stay HOT (no index writes).
with (fillfactor = 70);

comment on table public.call_balance is
'One prepaid account per user. balance always equals the sum of the user''s ledger.';

create index call_balance_plan_id_idx on public.call_balance (plan_id);

alter table public.call_balance enable row level security;

create policy "Users can read their own balance"  -- noqa: RF05
on public.call_balance
for select
to authenticated
using ((select auth.uid()) = user_id);

grant select on public.call_balance to authenticated, service_role;

/* ------------------------------------------------------------------------
 * Alerts (written by the money operations, read by the owner via Realtime)
 * ------------------------------------------------------------------------ */

create table public.billing_alerts (
    id uuid primary key default gen_random_uuid(),
    user_id uuid not null references public.call_balance (user_id) on delete cascade,
    type text not null check (  -- noqa: RF04
        type in (
            'low_balance', 'refill_requested', 'refill_succeeded', 'refill_failed',
            'auto_refill_disabled', 'auto_refill_cap_reached', 'number_past_due',
            'number_released', 'payment_reversed', 'dispute', 'dispute_won'
        )
    ),
    message text not null,
    metadata jsonb not null default '{}'::jsonb,
    -- one alert per key (e.g. one cap alert per month)
    dedupe_key text unique,
    read_at timestamptz,
    created_at timestamptz not null default now()
);

comment on table public.billing_alerts is
'Billing notices for the account owner; published to Realtime.';

create index billing_alerts_user_id_created_at_idx
on public.billing_alerts (user_id, created_at desc);

alter table public.billing_alerts enable row level security;

create policy "Users can read their own billing alerts"  -- noqa: RF05
on public.billing_alerts
for select
to authenticated
using ((select auth.uid()) = user_id);

grant select on public.billing_alerts to authenticated, service_role;

alter publication supabase_realtime add table public.billing_alerts;

/* ------------------------------------------------------------------------
 * Internal helpers (not granted to any API role)
 * ------------------------------------------------------------------------ */

-- Raise a PostgREST-status error: PT400 invalid input, PT403, PT404, PT409.
create or replace function billing._raise(p_code text, p_message text, p_detail text default null)
returns void
language plpgsql
as $$
begin
    if p_detail is null then
        raise exception using errcode = p_code, message = p_message;
    end if;
    raise exception using errcode = p_code, message = p_message, detail = p_detail;
end
$$;

revoke execute on function billing._raise(text, text, text) from public;

-- Stripe cents → dollars, refusing null, zero, negative and more than $10,000.
create or replace function billing._cents(p_cents bigint, p_label text default 'amount')
returns numeric
language plpgsql
immutable
as $$
begin
    if p_cents is null then
        perform billing._raise('PT400', pg_catalog.format('The %s is required.', p_label));
    end if;
    if p_cents <= 0 then
        perform billing._raise('PT400', pg_catalog.format('The %s must be positive.', p_label));
    end if;
    if p_cents > 1000000 then
        perform billing._raise(
            'PT400', pg_catalog.format('The %s exceeds $10,000 for one operation.', p_label)
        );
    end if;
    return (p_cents::numeric / 100)::numeric(12, 2);
end
$$;

revoke execute on function billing._cents(bigint, text) from public;

-- A provider identifier (payment intent, call sid, event id, key): 1–255 printable characters.
create or replace function billing._check_id(p_value text, p_label text)
returns text
language plpgsql
immutable
as $$
begin
    if p_value is null or pg_catalog.btrim(p_value) = '' then
        perform billing._raise('PT400', pg_catalog.format('The %s is required.', p_label));
    end if;
    if pg_catalog.length(p_value) > 255 or p_value !~ '^[[:graph:]]+$' then
        perform billing._raise('PT400', pg_catalog.format('The %s is malformed.', p_label));
    end if;
    return p_value;
end
$$;

revoke execute on function billing._check_id(text, text) from public;

-- E.164: a plus sign and up to 15 digits, the first not zero.
create or replace function billing._check_phone(p_phone text)
returns text
language plpgsql
immutable
as $$
begin
    if p_phone is null or p_phone !~ '^\+[1-9][0-9]{6,14}$' then
        perform billing._raise(
            'PT400',
            'The phone number must be in E.164 format, such as +14155550123.'
        );
    end if;
    return p_phone;
end
$$;

revoke execute on function billing._check_phone(text) from public;

-- The plan a new account gets: the one named in app metadata when it exists, else the default.
create or replace function billing._plan_for_new_account(p_requested text)
returns text
language sql
stable
as $$
    select coalesce(
        (select p.id from public.billing_plans as p where p.id = p_requested and p.is_active),
        (select p.id from public.billing_plans as p where p.is_default)
    )
$$;

revoke execute on function billing._plan_for_new_account(text) from public;

-- Create the account of an existing user when missing. PT404 for an unknown user.
create or replace function billing._ensure_account(p_user_id uuid)
returns void
language plpgsql
as $$
declare
    v_plan public.billing_plans;
    v_requested text;
begin
    if p_user_id is null then
        perform billing._raise('PT400', 'The user id is required.');
    end if;
    if exists (select from public.call_balance as cb where cb.user_id = p_user_id) then
        return;
    end if;
    select u.raw_app_meta_data ->> 'plan' into v_requested
    from auth.users as u
    where u.id = p_user_id;
    if not found then
        perform billing._raise('PT404', 'No such user.');
    end if;
    select p.* into v_plan
    from public.billing_plans as p
    where p.id = billing._plan_for_new_account(v_requested);
    if not found then
        perform billing._raise('PT404', 'No default billing plan is configured.');
    end if;
    insert into public.call_balance (
        user_id, plan_id, free_minutes_remaining, free_minutes_last_reset,
        auto_refill_threshold, auto_refill_amount
    ) values (
        p_user_id, v_plan.id, v_plan.free_minutes_monthly, billing.now(),
        v_plan.default_auto_refill_threshold, v_plan.auto_refill_amounts[1]
    )
    on conflict (user_id) do nothing;
end
$$;

revoke execute on function billing._ensure_account(uuid) from public;

/*
 * Lock the account row for a money operation (creating it when missing) and
 * apply the monthly free-minute reset: the first touch in a new UTC calendar
 * month restores the plan's allowance. Every operation that changes money
 * calls this first, so operations on one account are serialized.
 */
create or replace function billing._lock_account(p_user_id uuid)
returns public.call_balance
language plpgsql
as $$
declare
    v_account public.call_balance;
    v_now timestamptz := billing.now();
begin
    select cb.* into v_account
    from public.call_balance as cb
    where cb.user_id = p_user_id
    for update;
    if not found then
        perform billing._ensure_account(p_user_id);
        select cb.* into v_account
        from public.call_balance as cb
        where cb.user_id = p_user_id
        for update;
    end if;
    if pg_catalog.date_trunc('month', v_account.free_minutes_last_reset, 'UTC')
        < pg_catalog.date_trunc('month', v_now, 'UTC') then
        update public.call_balance as cb
        set
            free_minutes_remaining = p.free_minutes_monthly,
            free_minutes_last_reset = v_now,
            updated_at = v_now
        from public.billing_plans as p
        where cb.user_id = p_user_id and p.id = cb.plan_id
        returning cb.* into v_account;
    end if;
    return v_account;
end
$$;

revoke execute on function billing._lock_account(uuid) from public;

-- An alert for the owner; with a dedupe key, written at most once.
create or replace function billing._alert(
    p_user_id uuid,
    p_type text,
    p_message text,
    p_metadata jsonb default '{}'::jsonb,
    p_dedupe_key text default null
)
returns void
language sql
as $$
    insert into public.billing_alerts (user_id, type, message, metadata, dedupe_key, created_at)
    values (p_user_id, p_type, p_message, coalesce(p_metadata, '{}'::jsonb), p_dedupe_key,
        billing.now())
    on conflict (dedupe_key) do nothing
$$;

revoke execute on function billing._alert(uuid, text, text, jsonb, text) from public;

/* ------------------------------------------------------------------------
 * New users get an account
 * ------------------------------------------------------------------------ */

create or replace function billing.handle_new_user()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
    perform billing._ensure_account(new.id);
    return new;
end
$$;

revoke execute on function billing.handle_new_user() from public;

create trigger on_auth_user_created_create_call_balance
after insert on auth.users
for each row execute function billing.handle_new_user();
