/*
 * Settlement speed: billing.settle_call rates and writes in one statement, calling no helper.
 *
 * Every call ends in billing.settle_call, so its cost is the system's. Every
 * function carries `set search_path = ''` (Supabase's advisor asks for it),
 * and a function with a SET clause costs ~40 µs a call and is never inlined:
 * the clause stays, the calls go. The settlement of a call used to make two
 * SQL statements (lock the account; write) and call two helpers
 * (billing.now() and billing._uuid_v7()), plus some twenty PL/pgSQL
 * assignments; it now locks the account and makes one statement that rates
 * the call and writes the call log, the balance, the ledger entry and the
 * release of the hold, with the clock and the ledger id written out in it. Helpers run
 * only off the common path: a missing account or the first touch of a new
 * month (billing._lock_account), an overrun (billing._operator_alert), a
 * balance below the auto-refill threshold (billing._after_debit), and errors.
 *
 * The rules are those of 20261201000200_call_legs.sql, unchanged: billed for
 * at most the hold's max_seconds and what the balance pays, free minutes of the
 * month the call was authorized in, unbilled seconds recorded and alerted,
 * idempotent on the call sid (the call log's primary key), the hold released.
 *
 * Concurrency (read committed): a first, bare statement takes the account's
 * row lock; the one statement that rates and writes starts after the lock is
 * granted, so it reads the account's latest version and its UPDATE needs no
 * re-check. (Taking the lock inside that statement saves a statement but
 * makes every waiter on a hot account re-check both the lock and the update
 * against the newer version: measured slower on one account.)
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
    -- billing.now(), written out: the common path calls no helper.
    v_now timestamptz := case
        when session_user::text <> 'authenticator'
            then coalesce(
                nullif(pg_catalog.current_setting('billing.now', true), '')::timestamptz,
                pg_catalog.now()
            )
        else pg_catalog.now()
    end;
    v_r record;
    v_log_user_id uuid;
    v_minutes integer;
    v_free integer;
    v_amount numeric(12, 2);
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

    -- The account's row lock first, alone: the statement that follows starts after the
    -- lock is granted, so it reads the account's latest version (no re-check of a newer
    -- version, which is what a hot account's waiters would pay for every settlement).
    perform from public.call_balance as cb where cb.user_id = v_user_id for update;

    loop
        with locked as (
            select
                cb.balance, cb.free_minutes_remaining, cb.free_minutes_last_reset,
                cb.auto_refill_threshold, p.price_per_minute,
                h.max_seconds, h.held_free_minutes, h.created_at as hold_at
            from public.call_balance as cb
            inner join public.billing_plans as p on cb.plan_id = p.id
            left join public.call_holds as h on h.call_sid = p_call_sid
            where cb.user_id = v_user_id
        ),

        -- Rated only when this month's free minutes are in place (else: reset first).
        capped as (
            select
                l.*,
                -- Never more than the authorization covered.
                least(p_duration_seconds, coalesce(l.max_seconds, p_duration_seconds))
                    as auth_seconds,
                -- Authorized last month: rated against the free minutes that month's hold took.
                coalesce(
                    pg_catalog.date_trunc('month', l.hold_at, 'UTC')
                    < pg_catalog.date_trunc('month', v_now, 'UTC'),
                    false
                ) as last_month
            from locked as l
            where
                pg_catalog.date_trunc('month', l.free_minutes_last_reset, 'UTC')
                >= pg_catalog.date_trunc('month', v_now, 'UTC')
        ),

        rated as (
            select
                c.*, f.free, f.free_taken,
                -- Never more than the balance pays.
                least(
                    m.minutes - f.free,
                    pg_catalog.floor(greatest(c.balance, 0) / c.price_per_minute)::integer
                ) as paid
            from capped as c
            cross join lateral (select (c.auth_seconds + 59) / 60 as minutes) as m
            cross join lateral (
                select
                    least(
                        m.minutes,
                        case when c.last_month then c.held_free_minutes else c.free_minutes_remaining end
                    ) as free,
                    case when c.last_month then 0 else least(
                        m.minutes, c.free_minutes_remaining
                    ) end as free_taken
            ) as f
        ),

        bill as (
            select
                r.*,
                r.free + r.paid as minutes,
                least(r.auth_seconds, (r.free + r.paid) * 60) as seconds,
                (r.paid * r.price_per_minute)::numeric(12, 2) as amount,
                -- billing._uuid_v7(), written out: time-ordered ledger ids.
                case when r.paid > 0 then pg_catalog.encode(
                    pg_catalog.set_bit(
                        pg_catalog.set_bit(
                            pg_catalog.overlay(
                                pg_catalog.uuid_send(pg_catalog.gen_random_uuid()),
                                pg_catalog.substring(
                                    pg_catalog.int8send(
                                        (pg_catalog.date_part(
                                            'epoch', pg_catalog.clock_timestamp()
                                        ) * 1000)::bigint
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
                )::uuid end as transaction_id
            from rated as r
        ),

        -- The call log first: its primary key makes a sid settled before (or right now, on
        -- another account) a no-op. Only when the log row is new do the balance, the ledger
        -- and the hold move.
        logged as (
            insert into public.twilio_call_logs (
                user_id, call_sid, duration, status, is_billed, billed_minutes, free_minutes_used,
                price_per_minute, billed_amount, transaction_id, metadata, created_at,
                unbilled_seconds
            )
            select
                v_user_id, p_call_sid, b.seconds,
                pg_catalog.left(coalesce(nullif(v_metadata ->> 'status', ''), 'completed'), 32),
                true, b.minutes, b.free, b.price_per_minute, b.amount, b.transaction_id,
                v_metadata, v_now, p_duration_seconds - b.seconds
            from bill as b
            on conflict (call_sid) do nothing
            returning call_sid
        ),

        account as (
            update public.call_balance as cb
            set
                balance = cb.balance - b.amount,
                free_minutes_remaining = cb.free_minutes_remaining - b.free_taken,
                updated_at = v_now
            from bill as b
            where cb.user_id = v_user_id and exists (select from logged)
            returning cb.balance
        ),

        entry as (
            insert into public.balance_transactions (
                id, user_id, amount, type, reason, description, balance_before, balance_after,
                idempotency_key, metadata, created_at
            )
            select
                b.transaction_id, v_user_id, -b.amount, 'debit', 'call',
                pg_catalog.format('Call %s: %s min (%s free) at $%s/min', p_call_sid, b.minutes,
                    b.free, b.price_per_minute),
                a.balance + b.amount, a.balance, 'call:' || p_call_sid, '{}'::jsonb, v_now
            from account as a, bill as b
            where b.amount > 0
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

        select
            l.balance, l.auto_refill_threshold, l.max_seconds,
            b.minutes, b.free, b.amount, b.seconds, b.transaction_id,
            exists (select from logged) as settled,
            (select a.balance from account as a) as balance_after,
            (select r.user_id from released as r) as hold_user_id
        into v_r
        from locked as l
        left join bill as b on true;
        exit when found and v_r.minutes is not null;
        -- No account yet, or the first touch of a new month: create it or reset its minutes
        -- (and lock it).
        perform billing._lock_account(v_user_id);
    end loop;

    if not v_r.settled then
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
            'balance', v_r.balance,
            'transactionId', v_transaction_id,
            'duplicate', true
        );
    end if;

    -- The hold released must be this account's (raising undoes the whole settlement).
    if v_r.hold_user_id <> v_user_id then
        perform billing._raise('PT409', 'This call belongs to another account.');
    end if;
    if p_duration_seconds > v_r.seconds then
        perform billing._operator_alert(
            'call_overrun',
            pg_catalog.format(
                'Call %s reported %s s; %s s were billed, %s s were beyond its authorization '
                'or the balance.',
                p_call_sid, p_duration_seconds, v_r.seconds, p_duration_seconds - v_r.seconds
            ),
            v_user_id,
            pg_catalog.jsonb_build_object(
                'callSid', p_call_sid, 'reportedSeconds', p_duration_seconds,
                'billedSeconds', v_r.seconds, 'authorizedSeconds', v_r.max_seconds,
                'balance', v_r.balance
            ),
            'call_overrun:' || p_call_sid
        );
    end if;
    if v_r.amount > 0 and v_r.balance_after < v_r.auto_refill_threshold then
        perform billing._after_debit(v_user_id, v_r.balance_after + v_r.amount);
    end if;
    return pg_catalog.jsonb_build_object(
        'billedMinutes', v_r.minutes,
        'freeMinutesUsed', v_r.free,
        'billedAmount', v_r.amount,
        'balance', v_r.balance_after,
        'transactionId', v_r.transaction_id,
        'duplicate', false
    );
end
$$;
