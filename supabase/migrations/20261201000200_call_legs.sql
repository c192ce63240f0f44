/*
 * Call legs: one SQL call per Twilio event.
 *
 * A Twilio call has legs: the parent (the inbound call to a user's number, or
 * the browser client's call) and the child that <Dial> creates. The parent's
 * CallDuration includes ringing and the TwiML before <Dial>; only the
 * answered child's talk time is billed. Both legs report to the same status
 * callback, in either order, so the decision is taken here from the raw
 * callback fields:
 *
 *   billing.authorize_voice(params, inbound target)  the voice request: who pays
 *       (number owner or client identity), may the destination be dialed,
 *       hold the call's funds and minutes; returns what the TwiML needs.
 *   billing.apply_call_status(params)  a status callback, a <Dial action>
 *       request or the reconciliation job's view of the Calls API: which leg it
 *       is, whether it is terminal, and what to settle.
 *
 * Settlement never bills more than the call's authorization covered (its
 * hold's max_seconds) nor more than the balance pays: seconds beyond that are
 * recorded on the call log (unbilled_seconds) and raised to the operators
 * (public.operator_alerts, kind call_overrun). A call is rated against the free minutes of the
 * month in which it was authorized, which its hold took.
 *
 * Each plan names the destinations its calls may dial (E.164 prefixes),
 * refusing premium-rate numbers by default.
 */

/* ------------------------------------------------------------------------
 * Plans: the destinations a call may dial
 * ------------------------------------------------------------------------ */

alter table public.billing_plans
add column allowed_destinations text [] not null default array['+1']::text [],
add column blocked_destinations text [] not null default array['+1900', '+1976']::text [],
add constraint billing_plans_destination_prefixes check (
    pg_catalog.array_to_string(allowed_destinations, ',') ~ '^(\+[0-9]{1,15}(,|$))*$'
    and pg_catalog.array_to_string(blocked_destinations, ',') ~ '^(\+[0-9]{1,15}(,|$))*$'
);

comment on column public.billing_plans.allowed_destinations is
'E.164 prefixes a call may dial (North American numbers by default).';
comment on column public.billing_plans.blocked_destinations is
'E.164 prefixes a call may never dial, even within an allowed prefix (premium rate).';

/* ------------------------------------------------------------------------
 * Calls: what was not billed, when the parent leg ended
 * ------------------------------------------------------------------------ */

create domain public.second_count as integer check (value >= 0);

alter table public.twilio_call_logs
add column unbilled_seconds public.second_count not null default 0;

comment on column public.twilio_call_logs.unbilled_seconds is
'Seconds reported beyond what the call''s authorization (or the balance) covered; not billed.';

alter table public.call_holds
add column parent_ended_at timestamptz;

comment on column public.call_holds.parent_ended_at is
'When the parent leg reported its end; the dialed leg settles the call (or reconciliation does).';

/* ------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------ */

-- May a call on this plan dial this E.164 number?
create or replace function billing._destination_allowed(p_plan_id text, p_destination text)
returns boolean
language sql
stable
as $$
    select coalesce((
        select
            exists (
                select from pg_catalog.unnest(p.allowed_destinations) as a (prefix)
                where pg_catalog.starts_with(p_destination, a.prefix)
            )
            and not exists (
                select from pg_catalog.unnest(p.blocked_destinations) as b (prefix)
                where pg_catalog.starts_with(p_destination, b.prefix)
            )
        from public.billing_plans as p
        where p.id = p_plan_id
    ), false)
$$;

revoke execute on function billing._destination_allowed(text, text) from public;

-- A duration field of a callback: null when absent, else whole seconds up to 24 hours.
create or replace function billing._callback_seconds(p_value text, p_label text)
returns integer
language plpgsql
immutable
as $$
begin
    if p_value is null or p_value = '' then
        return null;
    end if;
    if p_value !~ '^[0-9]{1,6}$' then
        perform billing._raise(
            'PT400', pg_catalog.format('%s is not a whole number of seconds.', p_label)
        );
    end if;
    if p_value::integer > 86400 then
        perform billing._raise('PT400', pg_catalog.format('%s exceeds 24 hours.', p_label));
    end if;
    return p_value::integer;
end
$$;

revoke execute on function billing._callback_seconds(text, text) from public;

/* ------------------------------------------------------------------------
 * billing.authorize_call: the destination is checked against the plan
 * ------------------------------------------------------------------------ */

drop function billing.authorize_call(text, uuid);

/*
 * p_destination: the number an outbound call dials (E.164), checked against
 * the plan's allowed and blocked prefixes; null for a call routed to the
 * owner's own agent (an inbound call to their number).
 */
create or replace function billing.authorize_call(
    p_call_sid text,
    p_user_id uuid,
    p_destination text default null
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_account public.call_balance;
    v_hold public.call_holds;
    v_terms jsonb;
    v_reason text;
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

    if p_destination is not null then
        if p_destination !~ '^\+[1-9][0-9]{6,14}$' then
            v_reason := 'invalid_destination';
        elsif not billing._destination_allowed(v_account.plan_id, p_destination) then
            v_reason := 'destination_not_allowed';
        end if;
        if v_reason is not null then
            return pg_catalog.jsonb_build_object(
                'allowed', false, 'maxSeconds', 0, 'reason', v_reason,
                'minRequired', v_terms -> 'minRequired', 'callerId', v_terms -> 'callerId',
                'duplicate', false
            );
        end if;
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

revoke execute on function billing.authorize_call(text, uuid, text) from public;
grant execute on function billing.authorize_call(text, uuid, text) to service_role;

/* ------------------------------------------------------------------------
 * billing.authorize_voice: the voice request, decided in one call
 * ------------------------------------------------------------------------ */

/*
 * p_params: the voice request's form fields (CallSid, From, To, ...).
 * p_inbound_target: where calls to a user's number go (SIP URI, number or
 * client:...); null when the service routes none.
 *
 * From = client:<user id> is the user's own outbound call to To; anything
 * else is a call to To, a user's number, billed to its owner. Returns
 * {allowed, reason, say, target, callerId, maxSeconds, holdId, duplicate}:
 * what the TwiML needs. A refused outbound call names the reason and the
 * minimum to its owner; a refused inbound call tells the stranger nothing
 * about the owner's account.
 */
create or replace function billing.authorize_voice(
    p_params jsonb,
    p_inbound_target text default null
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_sid text := p_params ->> 'CallSid';
    v_from text := coalesce(p_params ->> 'From', '');
    v_to text := coalesce(p_params ->> 'To', '');
    v_identity text;
    v_user_id uuid;
    v_hold jsonb;
    v_reason text;
    v_say text;
begin
    if pg_catalog.jsonb_typeof(p_params) is distinct from 'object' then
        perform billing._raise('PT400', 'The voice request must be a JSON object.');
    end if;
    if v_sid is null or v_sid !~ '^CA[0-9a-fA-F]{32}$' then
        return pg_catalog.jsonb_build_object(
            'allowed', false, 'reason', 'no_call_sid',
            'say', 'This call could not be identified.'
        );
    end if;

    if pg_catalog.starts_with(v_from, 'client:') then
        -- The user's own call from the browser: the identity is their user id.
        v_identity := pg_catalog.substr(v_from, 8);
        if v_identity ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
            v_user_id := v_identity::uuid;
        end if;
        if v_user_id is null or not exists (
            select from auth.users as u where u.id = v_user_id
        ) then
            return pg_catalog.jsonb_build_object(
                'allowed', false, 'reason', 'unknown_client', 'say', 'This caller is not known.'
            );
        end if;
        v_hold := billing.authorize_call(v_sid, v_user_id, v_to);
        if (v_hold ->> 'allowed')::boolean then
            return v_hold || pg_catalog.jsonb_build_object('target', v_to, 'say', null);
        end if;
        v_reason := v_hold ->> 'reason';
        v_say := case v_reason
            when 'no_active_number'
                then 'You need an active phone number before you can place calls.'
            when 'insufficient_balance'
                then pg_catalog.format(
                    'Your balance is too low to place this call. Please top up. '
                    'A balance of at least %s dollars is required.',
                    pg_catalog.to_char((v_hold ->> 'minRequired')::numeric, 'FM999999990.00')
                )
            when 'invalid_destination' then 'That number is not valid.'
            when 'destination_not_allowed'
                then 'Calls to that number are not allowed on your plan.'
            else 'This call cannot be placed right now.'
        end;
        return v_hold || pg_catalog.jsonb_build_object('say', v_say, 'target', null);
    end if;

    -- A call to a user's number, from anyone: the owner pays, the caller learns nothing.
    if v_to ~ '^\+[1-9][0-9]{6,14}$' then
        v_user_id := billing.number_owner(v_to);
    end if;
    if v_user_id is null then
        return pg_catalog.jsonb_build_object(
            'allowed', false, 'reason', 'number_has_no_owner',
            'say', 'This number is not in service.'
        );
    end if;
    if p_inbound_target is null then
        return pg_catalog.jsonb_build_object(
            'allowed', false, 'reason', 'no_inbound_route',
            'say', 'This number cannot take calls right now.'
        );
    end if;
    v_hold := billing.authorize_call(v_sid, v_user_id, null);
    if not (v_hold ->> 'allowed')::boolean then
        return pg_catalog.jsonb_build_object(
            'allowed', false, 'reason', v_hold ->> 'reason',
            'say', 'This number cannot take calls right now.'
        );
    end if;
    return (v_hold - 'minRequired') || pg_catalog.jsonb_build_object(
        'target', p_inbound_target,
        'callerId', case when v_from ~ '^\+[1-9][0-9]{6,14}$' then v_from end,
        'say', null
    );
end
$$;

revoke execute on function billing.authorize_voice(jsonb, text) from public;
grant execute on function billing.authorize_voice(jsonb, text) to service_role;

/* ------------------------------------------------------------------------
 * billing.settle_call: capped by the authorization, rated in its month
 * ------------------------------------------------------------------------ */

/*
 * The hottest path of the system (every call ends here), so it is written as
 * two statements rather than through the generic helpers: one locks the
 * account and reads its plan and the call's hold; one writes the call log,
 * the balance, the ledger entry and the release of the call's hold together
 * (or nothing, for a sid already settled). The ledger rules are those of
 * billing._post: same columns, same checks, same idempotency key.
 *
 * With a hold, the call is billed for at most the hold's max_seconds, and its
 * free minutes come from the month it was authorized in: a call authorized
 * last month uses the free minutes its hold took (the rest of that month's
 * allowance lapsed), never the new month's. Paid minutes never exceed what
 * the balance pays: a settlement does not take the balance below zero.
 * Seconds not billed are recorded (unbilled_seconds) with an operator alert.
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
    v_hold_seconds integer;
    v_hold_free integer;
    v_hold_at timestamptz;
    v_log_user_id uuid;
    v_hold_user_id uuid;
    v_seconds integer;
    v_minutes integer;
    v_free integer;
    v_free_taken integer;
    v_paid integer;
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
            cb.auto_refill_threshold, p.price_per_minute,
            h.max_seconds, h.held_free_minutes, h.created_at
        into
            v_balance, v_free_remaining, v_last_reset, v_threshold, v_price,
            v_hold_seconds, v_hold_free, v_hold_at
        from public.call_balance as cb
        inner join public.billing_plans as p on cb.plan_id = p.id
        left join public.call_holds as h on h.call_sid = p_call_sid
        where cb.user_id = v_user_id
        for update of cb;
        exit when found
            and pg_catalog.date_trunc('month', v_last_reset, 'UTC')
            >= pg_catalog.date_trunc('month', v_now, 'UTC');
        -- No account yet, or the first touch of a new month: create it or reset its minutes.
        perform billing._lock_account(v_user_id);
    end loop;

    -- Never more than the authorization covered.
    v_seconds := least(p_duration_seconds, coalesce(v_hold_seconds, p_duration_seconds));
    v_minutes := (v_seconds + 59) / 60;
    if v_hold_at is not null
        and pg_catalog.date_trunc('month', v_hold_at, 'UTC')
        < pg_catalog.date_trunc('month', v_now, 'UTC') then
        -- Authorized last month: rated against the free minutes that month's hold took.
        v_free := least(v_minutes, v_hold_free);
        v_free_taken := 0;
    else
        v_free := least(v_minutes, v_free_remaining);
        v_free_taken := v_free;
    end if;
    -- Never more than the balance pays.
    v_paid := least(
        v_minutes - v_free, pg_catalog.floor(greatest(v_balance, 0) / v_price)::integer
    );
    v_minutes := v_free + v_paid;
    v_seconds := least(v_seconds, v_minutes * 60);
    v_amount := v_paid * v_price;
    v_transaction_id := case when v_amount > 0 then billing._uuid_v7() end;

    -- The call log first: its primary key makes a sid settled before (or right now, on
    -- another account) a no-op. Only when the log row is new do the balance and the
    -- ledger move; all three in one statement.
    with logged as (
        insert into public.twilio_call_logs (
            user_id, call_sid, duration, status, is_billed, billed_minutes, free_minutes_used,
            price_per_minute, billed_amount, transaction_id, metadata, created_at,
            unbilled_seconds
        ) values (
            v_user_id, p_call_sid, v_seconds,
            pg_catalog.left(coalesce(nullif(v_metadata ->> 'status', ''), 'completed'), 32),
            true, v_minutes, v_free, v_price, v_amount, v_transaction_id, v_metadata, v_now,
            p_duration_seconds - v_seconds
        )
        on conflict (call_sid) do nothing
        returning call_sid
    ),

    account as (
        update public.call_balance as cb
        set
            balance = cb.balance - v_amount,
            free_minutes_remaining = cb.free_minutes_remaining - v_free_taken,
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
    if p_duration_seconds > v_seconds then
        perform billing._operator_alert(
            'call_overrun',
            pg_catalog.format(
                'Call %s reported %s s; %s s were billed, %s s were beyond its authorization '
                'or the balance.',
                p_call_sid, p_duration_seconds, v_seconds, p_duration_seconds - v_seconds
            ),
            v_user_id,
            pg_catalog.jsonb_build_object(
                'callSid', p_call_sid, 'reportedSeconds', p_duration_seconds, 'billedSeconds', v_seconds,
                'authorizedSeconds', v_hold_seconds, 'balance', v_balance
            ),
            'call_overrun:' || p_call_sid
        );
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

/* ------------------------------------------------------------------------
 * billing.apply_call_status: a status callback, decided in one call
 * ------------------------------------------------------------------------ */

/*
 * p_params: the callback's form fields as Twilio sends them. Three shapes:
 *
 * - the dialed leg's callback (ParentCallSid set): its CallDuration is the
 *   talk time; a terminal status settles the parent's call (completed: that
 *   duration; busy, no-answer, failed, canceled: nothing);
 * - the <Dial action> request on the parent (DialCallStatus set, as the
 *   reconciliation job also reports the Calls API's view): DialCallDuration
 *   when the dialed leg answered, else nothing;
 * - the parent leg's own callback: `completed` only records that the parent
 *   ended (its CallDuration includes ringing and is never billed); the child's
 *   callback, or reconciliation, settles. A parent that ended unanswered
 *   (busy, no-answer, failed, canceled) settles nothing at $0.
 *
 * Non-terminal statuses are acknowledged. Returns {outcome, callSid, ...}:
 * outcome is settled | duplicate | parent_ended | acknowledged | no_hold, with
 * settle_call's answer when a settlement was made.
 */
create or replace function billing.apply_call_status(p_params jsonb)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_sid text;
    v_parent text;
    v_status text;
    v_dial_status text;
    v_duration integer;
    v_dial_duration integer;
    v_call_sid text;
    v_leg text;
    v_seconds integer;
    v_user_id uuid;
    v_result jsonb;
begin
    if pg_catalog.jsonb_typeof(p_params) is distinct from 'object' then
        perform billing._raise('PT400', 'The callback must be a JSON object.');
    end if;
    v_sid := p_params ->> 'CallSid';
    v_parent := nullif(p_params ->> 'ParentCallSid', '');
    v_status := coalesce(p_params ->> 'CallStatus', '');
    v_dial_status := nullif(p_params ->> 'DialCallStatus', '');
    if v_sid is null or v_sid !~ '^CA[0-9a-fA-F]{32}$' then
        perform billing._raise('PT400', 'CallSid is missing or malformed.');
    end if;
    if v_parent !~ '^CA[0-9a-fA-F]{32}$' or v_parent = v_sid then
        perform billing._raise('PT400', 'ParentCallSid is malformed.');
    end if;
    if v_status !~ '^[a-z-]{1,32}$' then
        perform billing._raise('PT400', 'CallStatus is missing or malformed.');
    end if;
    if v_dial_status !~ '^[a-z-]{1,32}$' then
        perform billing._raise('PT400', 'DialCallStatus is malformed.');
    end if;
    v_duration := billing._callback_seconds(p_params ->> 'CallDuration', 'CallDuration');
    v_dial_duration := billing._callback_seconds(
        p_params ->> 'DialCallDuration', 'DialCallDuration'
    );

    if v_parent is not null then
        v_call_sid := v_parent;
        v_leg := 'dialed';
        if v_status = 'completed' then
            v_seconds := coalesce(v_duration, 0);
        elsif v_status in ('busy', 'no-answer', 'failed', 'canceled') then
            v_seconds := 0;
        end if;
    elsif v_dial_status is not null then
        v_call_sid := v_sid;
        v_leg := 'dial_result';
        v_status := v_dial_status;
        if v_dial_status in ('completed', 'answered') then
            v_seconds := coalesce(v_dial_duration, 0);
        elsif v_dial_status in ('busy', 'no-answer', 'failed', 'canceled') then
            v_seconds := 0;
        end if;
    else
        v_call_sid := v_sid;
        v_leg := 'parent';
        if v_status = 'completed' then
            update public.call_holds as h
            set parent_ended_at = coalesce(h.parent_ended_at, billing.now())
            where h.call_sid = v_sid
            returning h.user_id into v_user_id;
            return pg_catalog.jsonb_build_object(
                'outcome', case when v_user_id is null then 'no_hold' else 'parent_ended' end,
                'callSid', v_sid
            );
        elsif v_status in ('busy', 'no-answer', 'failed', 'canceled') then
            v_seconds := 0;
        end if;
    end if;

    if v_seconds is null then
        return pg_catalog.jsonb_build_object(
            'outcome', 'acknowledged', 'callSid', v_call_sid, 'status', v_status
        );
    end if;
    select h.user_id into v_user_id from public.call_holds as h where h.call_sid = v_call_sid;
    if v_user_id is null then
        -- Not authorized (yet): a callback that overtook its voice request is settled by
        -- reconciliation once the hold exists.
        return pg_catalog.jsonb_build_object('outcome', 'no_hold', 'callSid', v_call_sid);
    end if;
    v_result := billing.settle_call(
        v_call_sid, v_user_id, v_seconds,
        pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
            'status', v_status, 'leg', v_leg, 'leg_sid', v_sid,
            'direction', pg_catalog.left(p_params ->> 'Direction', 32),
            'source', pg_catalog.left(p_params ->> 'Source', 32)
        ))
    );
    return v_result || pg_catalog.jsonb_build_object(
        'outcome', case when (v_result ->> 'duplicate')::boolean then 'duplicate' else 'settled' end,
        'callSid', v_call_sid
    );
end
$$;

revoke execute on function billing.apply_call_status(jsonb) from public;
grant execute on function billing.apply_call_status(jsonb) to service_role;

/* ------------------------------------------------------------------------
 * billing.stale_holds: a call whose parent ended is due at once
 * ------------------------------------------------------------------------ */

-- Holds whose status callback is overdue: the call's limit plus 2 minutes has passed, or
-- its parent leg ended more than 2 minutes ago and the dialed leg never reported.
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
declare
    v_now timestamptz := coalesce(p_now, billing.now());
begin
    if p_limit is null or p_limit < 1 or p_limit > 1000 then
        perform billing._raise('PT400', 'The limit must be between 1 and 1000.');
    end if;
    return query
    select h.call_sid, h.user_id, h.created_at, h.max_seconds
    from public.call_holds as h
    where
        h.released_at is null
        and (
            h.created_at + pg_catalog.make_interval(secs => h.max_seconds) + interval '2 minutes'
            < v_now
            or h.parent_ended_at + interval '2 minutes' < v_now
        )
    order by h.created_at, h.id
    limit p_limit;
end
$$;
