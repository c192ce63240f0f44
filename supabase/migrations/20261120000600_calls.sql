/*
 * Calls: authorize (hold), settle (bill), expire.
 *
 * The voice webhook calls billing.authorize_call before connecting: under the
 * account's row lock it checks the plan's call rules against what is not
 * already held by other calls in progress, then holds the free minutes and
 * funds the call may use and returns how long it may last (Twilio's
 * <Dial timeLimit>, at most 14400 s). The status callback calls
 * billing.settle_call with the real duration: ceil(s/60) minutes, free minutes
 * first, then the balance at the plan's rate; the hold is released. A hold
 * whose callback never comes is found by billing.stale_holds (to reconcile
 * against the provider) and released by billing.release_expired_holds.
 */

create table public.twilio_call_logs (
    -- Twilio's CallSid: one row per call, and the settlement's idempotency key
    call_sid text primary key,
    -- the account (not a foreign key: settle_call writes this row only while it holds the
    -- account's row lock, and this is the hottest insert of the system)
    user_id uuid not null,
    -- seconds, as Twilio's CallDuration
    duration integer not null,
    status text not null default 'completed',
    is_billed boolean not null default true,
    billed_minutes public.minute_count not null,
    free_minutes_used public.minute_count not null,
    -- the plan's rate when the call was settled (plans check that it is positive)
    price_per_minute numeric(12, 2) not null,
    billed_amount numeric(12, 2) not null,
    -- the ledger entry of a paid call (also found by its idempotency key 'call:' || call_sid);
    -- not a foreign key, to keep the hottest insert of the system light
    transaction_id uuid,
    metadata jsonb not null default '{}'::jsonb,
    created_at timestamptz not null default now(),
    -- One check for the billing rule (one constraint is cheaper to apply than four):
    -- ceil(s/60) minutes, free ones first, the rest at the rate.
    constraint twilio_call_logs_billing_rule check (
        duration >= 0
        and billed_minutes = (duration + 59) / 60
        and free_minutes_used <= billed_minutes
        and billed_amount = (billed_minutes - free_minutes_used) * price_per_minute
    )
);

comment on table public.twilio_call_logs is 'One row per settled call: what it cost and how.';

create index twilio_call_logs_user_id_created_at_idx
on public.twilio_call_logs (user_id, created_at desc);

alter table public.twilio_call_logs enable row level security;

create policy "Users can read their own call logs"  -- noqa: RF05
on public.twilio_call_logs
for select
to authenticated
using ((select auth.uid()) = user_id);

grant select on public.twilio_call_logs to authenticated, service_role;

create table public.call_holds (
    id uuid primary key default gen_random_uuid(),
    call_sid text not null unique,
    user_id uuid not null references public.call_balance (user_id) on delete cascade,
    held_amount numeric(12, 2) not null check (held_amount >= 0),
    held_free_minutes integer not null check (held_free_minutes >= 0),
    max_seconds integer not null check (max_seconds between 0 and 14400),
    created_at timestamptz not null default now(),
    expires_at timestamptz not null,
    released_at timestamptz,
    release_reason text check (release_reason in ('settled', 'expired')),
    constraint call_holds_release_pair check ((released_at is null) = (release_reason is null))
);

comment on table public.call_holds is
'Funds and free minutes held by calls in progress (released_at is null).';

create index call_holds_active_user_id_idx on public.call_holds (user_id)
where released_at is null;

create index call_holds_active_expires_at_idx on public.call_holds (expires_at)
where released_at is null;

alter table public.call_holds enable row level security;
-- No policy: holds are internal to the billing functions.

grant select on public.call_holds to service_role;

/* ------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------ */

create or replace function billing._held_amount(p_user_id uuid)
returns numeric
language sql
stable
as $$
    select coalesce(sum(h.held_amount), 0)
    from public.call_holds as h
    where h.user_id = p_user_id and h.released_at is null
$$;

revoke execute on function billing._held_amount(uuid) from public;

create or replace function billing._held_free_minutes(p_user_id uuid)
returns integer
language sql
stable
as $$
    select coalesce(sum(h.held_free_minutes), 0)::integer
    from public.call_holds as h
    where h.user_id = p_user_id and h.released_at is null
$$;

revoke execute on function billing._held_free_minutes(uuid) from public;

/*
 * May this account start a call now, and what would it hold? Free minutes and
 * funds already held by other calls are not available. A call needs an
 * active number on plans that require one, and either free minutes or an
 * available balance of at least the plan's minimum and at least one minute's
 * price (classic: "balance > $0" — a call that cannot pay its first minute is
 * not started). The hold covers every free minute and every whole minute the
 * available funds buy, up to 14400 s.
 */
create or replace function billing._call_terms(p_account public.call_balance)
returns jsonb
language plpgsql
stable
as $$
declare
    v_plan public.billing_plans;
    v_free integer;
    v_funds numeric(12, 2);
    v_min_required numeric(12, 2);
    v_caller_id text;
    v_hold_free integer;
    v_hold_paid integer;
begin
    select p.* into v_plan from public.billing_plans as p where p.id = p_account.plan_id;
    v_min_required := greatest(v_plan.min_balance, v_plan.price_per_minute);
    select n.phone_number into v_caller_id
    from public.user_phone_numbers as n
    where n.user_id = p_account.user_id and n.status in ('active', 'past_due')
    order by n.status, n.activated_at, n.id
    limit 1;
    if v_plan.requires_active_number and v_caller_id is null then
        return pg_catalog.jsonb_build_object(
            'allowed', false, 'maxSeconds', 0, 'reason', 'no_active_number',
            'minRequired', v_min_required, 'callerId', null,
            'holdFreeMinutes', 0, 'holdAmount', 0
        );
    end if;
    v_free := greatest(
        p_account.free_minutes_remaining - billing._held_free_minutes(p_account.user_id), 0
    );
    v_funds := greatest(p_account.balance - billing._held_amount(p_account.user_id), 0);
    if v_free = 0 and v_funds < v_min_required then
        return pg_catalog.jsonb_build_object(
            'allowed', false, 'maxSeconds', 0, 'reason', 'insufficient_balance',
            'minRequired', v_min_required, 'callerId', v_caller_id,
            'holdFreeMinutes', 0, 'holdAmount', 0
        );
    end if;
    v_hold_free := least(v_free, 240);
    v_hold_paid := least(pg_catalog.floor(v_funds / v_plan.price_per_minute)::integer,
        240 - v_hold_free);
    return pg_catalog.jsonb_build_object(
        'allowed', true,
        'maxSeconds', (v_hold_free + v_hold_paid) * 60,
        'reason', null,
        'minRequired', v_min_required,
        'callerId', v_caller_id,
        'holdFreeMinutes', v_hold_free,
        'holdAmount', v_hold_paid * v_plan.price_per_minute
    );
end
$$;

revoke execute on function billing._call_terms(public.call_balance) from public;

/* ------------------------------------------------------------------------
 * billing.authorize_call
 * ------------------------------------------------------------------------ */

create or replace function billing.authorize_call(p_call_sid text, p_user_id uuid)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_account public.call_balance;
    v_hold public.call_holds;
    v_terms jsonb;
    v_now timestamptz := billing.now();
begin
    perform billing._check_id(p_call_sid, 'call sid');
    if p_user_id is null then
        perform billing._raise('PT400', 'The user id is required.');
    end if;
    v_account := billing._lock_account(p_user_id);
    v_terms := billing._call_terms(v_account);

    select h.* into v_hold from public.call_holds as h where h.call_sid = p_call_sid;
    if found then
        if v_hold.user_id <> p_user_id then
            perform billing._raise('PT409', 'This call belongs to another account.');
        end if;
        if v_hold.released_at is null then
            -- A retried webhook: the same hold, not a second one.
            return pg_catalog.jsonb_build_object(
                'allowed', true, 'maxSeconds', v_hold.max_seconds, 'reason', null,
                'minRequired', v_terms -> 'minRequired', 'callerId', v_terms -> 'callerId',
                'holdId', v_hold.id, 'duplicate', true
            );
        end if;
        return pg_catalog.jsonb_build_object(
            'allowed', false, 'maxSeconds', 0, 'reason', 'call_already_ended',
            'minRequired', v_terms -> 'minRequired', 'callerId', v_terms -> 'callerId',
            'duplicate', true
        );
    end if;
    if exists (select from public.twilio_call_logs as l where l.call_sid = p_call_sid) then
        return pg_catalog.jsonb_build_object(
            'allowed', false, 'maxSeconds', 0, 'reason', 'call_already_ended',
            'minRequired', v_terms -> 'minRequired', 'callerId', v_terms -> 'callerId',
            'duplicate', true
        );
    end if;

    if not (v_terms ->> 'allowed')::boolean then
        return (v_terms - 'holdFreeMinutes' - 'holdAmount')
            || '{"duplicate": false}'::jsonb;
    end if;
    insert into public.call_holds (
        call_sid, user_id, held_amount, held_free_minutes, max_seconds, created_at, expires_at
    ) values (
        p_call_sid, p_user_id, (v_terms ->> 'holdAmount')::numeric,
        (v_terms ->> 'holdFreeMinutes')::integer, (v_terms ->> 'maxSeconds')::integer, v_now,
        v_now + pg_catalog.make_interval(secs => (v_terms ->> 'maxSeconds')::integer)
        + interval '15 minutes'
    )
    returning * into v_hold;
    return (v_terms - 'holdFreeMinutes' - 'holdAmount')
        || pg_catalog.jsonb_build_object('holdId', v_hold.id, 'duplicate', false);
end
$$;

revoke execute on function billing.authorize_call(text, uuid) from public;
grant execute on function billing.authorize_call(text, uuid) to service_role;

/* ------------------------------------------------------------------------
 * billing.settle_call
 * ------------------------------------------------------------------------ */

/*
 * The hottest path of the system (every call ends here), so it is written as
 * two statements rather than through the generic helpers: one locks the
 * account and reads its plan; one writes the call log, the balance, the
 * ledger entry and the release of the call's hold together (or nothing, for a
 * sid already settled). The ledger rules are those of
 * billing._post: same columns, same checks, same idempotency key.
 */
create or replace function billing.settle_call(
    p_call_sid text,
    p_user_id uuid,
    p_duration_seconds integer,
    p_metadata jsonb default '{}'::jsonb
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_user_id uuid := p_user_id;
    v_metadata jsonb := coalesce(p_metadata, '{}'::jsonb);
    v_now timestamptz := billing.now();
    v_balance numeric(12, 2);
    v_free_remaining integer;
    v_last_reset timestamptz;
    v_threshold numeric(12, 2);
    v_price numeric(12, 2);
    v_log_user_id uuid;
    v_hold_user_id uuid;
    v_minutes integer;
    v_free integer;
    v_amount numeric(12, 2);
    v_balance_after numeric(12, 2);
    v_transaction_id uuid;
begin
    if p_call_sid is null or pg_catalog.length(p_call_sid) > 255 or p_call_sid !~ '^[[:graph:]]+$' then
        perform billing._check_id(p_call_sid, 'call sid');
    end if;
    if p_duration_seconds is null or p_duration_seconds < 0 then
        perform billing._raise('PT400', 'The call duration must be zero or more seconds.');
    end if;
    if p_duration_seconds > 86400 then
        perform billing._raise('PT400', 'The call duration exceeds 24 hours.');
    end if;
    if pg_catalog.jsonb_typeof(v_metadata) <> 'object' then
        perform billing._raise('PT400', 'The metadata must be a JSON object.');
    end if;
    if v_user_id is null then
        select h.user_id into v_user_id from public.call_holds as h where h.call_sid = p_call_sid;
        if not found then
            perform billing._raise('PT404', 'No hold for this call, and no user was given.');
        end if;
    end if;

    loop
        select
            cb.balance, cb.free_minutes_remaining, cb.free_minutes_last_reset,
            cb.auto_refill_threshold, p.price_per_minute
        into v_balance, v_free_remaining, v_last_reset, v_threshold, v_price
        from public.call_balance as cb
        inner join public.billing_plans as p on cb.plan_id = p.id
        where cb.user_id = v_user_id
        for update of cb;
        exit when found
            and pg_catalog.date_trunc('month', v_last_reset, 'UTC')
            >= pg_catalog.date_trunc('month', v_now, 'UTC');
        -- No account yet, or the first touch of a new month: create it or reset its minutes.
        perform billing._lock_account(v_user_id);
    end loop;

    v_minutes := (p_duration_seconds + 59) / 60;
    v_free := least(v_minutes, v_free_remaining);
    v_amount := (v_minutes - v_free) * v_price;
    v_transaction_id := case when v_amount > 0 then billing._uuid_v7() end;

    -- The call log first: its primary key makes a sid settled before (or right now, on
    -- another account) a no-op. Only when the log row is new do the balance and the
    -- ledger move; all three in one statement.
    with logged as (
        insert into public.twilio_call_logs (
            user_id, call_sid, duration, status, is_billed, billed_minutes, free_minutes_used,
            price_per_minute, billed_amount, transaction_id, metadata, created_at
        ) values (
            v_user_id, p_call_sid, p_duration_seconds,
            pg_catalog.left(coalesce(nullif(v_metadata ->> 'status', ''), 'completed'), 32),
            true, v_minutes, v_free, v_price, v_amount, v_transaction_id, v_metadata, v_now
        )
        on conflict (call_sid) do nothing
        returning call_sid
    ),

    account as (
        update public.call_balance as cb
        set
            balance = cb.balance - v_amount,
            free_minutes_remaining = cb.free_minutes_remaining - v_free,
            updated_at = v_now
        where cb.user_id = v_user_id and exists (select from logged)
        returning cb.balance
    ),

    entry as (
        insert into public.balance_transactions (
            id, user_id, amount, type, reason, description, balance_before, balance_after,
            idempotency_key, metadata, created_at
        )
        select
            v_transaction_id, v_user_id, -v_amount, 'debit', 'call',
            pg_catalog.format('Call %s: %s min (%s free) at $%s/min', p_call_sid, v_minutes,
                v_free, v_price),
            a.balance + v_amount, a.balance, 'call:' || p_call_sid, '{}'::jsonb, v_now
        from account as a
        where v_amount > 0
    ),

    -- Release the hold, if any (an expired one keeps its reason).
    released as (
        update public.call_holds as h
        set
            released_at = coalesce(h.released_at, v_now),
            release_reason = coalesce(h.release_reason, 'settled')
        where h.call_sid = p_call_sid and exists (select from logged)
        returning h.user_id
    )

    select a.balance, (select r.user_id from released as r)
    into v_balance_after, v_hold_user_id
    from account as a;

    if not found then
        -- Settled before: answer what was billed then.
        select l.user_id, l.billed_minutes, l.free_minutes_used, l.billed_amount, l.transaction_id
        into v_log_user_id, v_minutes, v_free, v_amount, v_transaction_id
        from public.twilio_call_logs as l
        where l.call_sid = p_call_sid;
        if v_log_user_id <> v_user_id then
            perform billing._raise('PT409', 'This call was settled on another account.');
        end if;
        return pg_catalog.jsonb_build_object(
            'billedMinutes', v_minutes,
            'freeMinutesUsed', v_free,
            'billedAmount', v_amount,
            'balance', v_balance,
            'transactionId', v_transaction_id,
            'duplicate', true
        );
    end if;

    -- The hold released must be this account's (raising undoes the whole settlement).
    if v_hold_user_id <> v_user_id then
        perform billing._raise('PT409', 'This call belongs to another account.');
    end if;
    if v_amount > 0 and v_balance_after < v_threshold then
        perform billing._after_debit(v_user_id, v_balance_after + v_amount);
    end if;
    return pg_catalog.jsonb_build_object(
        'billedMinutes', v_minutes,
        'freeMinutesUsed', v_free,
        'billedAmount', v_amount,
        'balance', v_balance_after,
        'transactionId', v_transaction_id,
        'duplicate', false
    );
end
$$;

revoke execute on function billing.settle_call(text, uuid, integer, jsonb) from public;
grant execute on function billing.settle_call(text, uuid, integer, jsonb) to service_role;

/* ------------------------------------------------------------------------
 * billing.stale_holds, billing.release_expired_holds
 * ------------------------------------------------------------------------ */

-- Holds whose status callback is overdue (the call's limit plus 2 minutes has passed).
create or replace function billing.stale_holds(
    p_now timestamptz default null,
    p_limit integer default 100
)
returns table (call_sid text, user_id uuid, created_at timestamptz, max_seconds integer)
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
    if p_limit is null or p_limit < 1 or p_limit > 1000 then
        perform billing._raise('PT400', 'The limit must be between 1 and 1000.');
    end if;
    return query
    select h.call_sid, h.user_id, h.created_at, h.max_seconds
    from public.call_holds as h
    where
        h.released_at is null
        and h.created_at + pg_catalog.make_interval(secs => h.max_seconds) + interval '2 minutes'
        < coalesce(p_now, billing.now())
    order by h.created_at, h.id
    limit p_limit;
end
$$;

revoke execute on function billing.stale_holds(timestamptz, integer) from public;
grant execute on function billing.stale_holds(timestamptz, integer) to service_role;

-- Release holds past their limit plus 15 minutes; a later settle_call still bills the call.
create or replace function billing.release_expired_holds(p_now timestamptz default null)
returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_now timestamptz := coalesce(p_now, billing.now());
    v_count integer;
begin
    update public.call_holds as h
    set released_at = v_now, release_reason = 'expired'
    where h.released_at is null and h.expires_at < v_now;
    get diagnostics v_count = row_count;
    if v_count > 0 then
        raise log 'billing: released % expired call holds', v_count;
    end if;
    return v_count;
end
$$;

revoke execute on function billing.release_expired_holds(timestamptz) from public;
grant execute on function billing.release_expired_holds(timestamptz) to service_role;
