/*
 * Supabase's advisor finds nothing, and reads never write.
 *
 * - Every function sets `search_path = ''`. The helpers (billing._*,
 *   billing.now) already qualify every name; they only gain the setting, so
 *   their bodies stay where they are.
 * - Nothing security definer stays in the exposed schema. The four user
 *   entry points keep their names, arguments and results in `public`, but
 *   become security invoker: each checks that a user is signed in and calls
 *   its security definer twin in `billing` (not exposed by PostgREST), which
 *   acts on auth.uid() only and takes no user argument, so granting it to
 *   `authenticated` lets a user reach nobody's account but their own.
 *   `authenticated` gets usage on schema billing for that, and execute on
 *   those four functions only (every other billing function is revoked from
 *   public, and the schema's default privileges revoke execute too).
 * - Reads never write. billing_me and check_can_call are `stable`: they read
 *   the account as the next money operation will find it — free minutes of a
 *   new month at the plan's allowance, an account not created yet as account
 *   creation would make it — without storing anything, so they work in a
 *   read-only transaction (GET /rest/v1/rpc/..., a read replica). The monthly
 *   reset is stored by the next money operation (billing._lock_account).
 */

/* ------------------------------------------------------------------------
 * search_path on every helper
 * ------------------------------------------------------------------------ */

alter function billing.now() set search_path = '';
alter function billing._raise(text, text, text) set search_path = '';
alter function billing._cents(bigint, text) set search_path = '';
alter function billing._check_id(text, text) set search_path = '';
alter function billing._check_phone(text) set search_path = '';
alter function billing._plan_for_new_account(text) set search_path = '';
alter function billing._ensure_account(uuid) set search_path = '';
alter function billing._lock_account(uuid) set search_path = '';
alter function billing._alert(uuid, text, text, jsonb, text) set search_path = '';
alter function billing._uuid_v7() set search_path = '';
alter function billing._post(uuid, numeric, text, text, text, text, text, jsonb)
set search_path = '';
alter function billing._after_debit(uuid, numeric) set search_path = '';
alter function billing._cancel_pending_refills(uuid, text) set search_path = '';
alter function billing._lock_payment_intent(text) set search_path = '';
alter function billing._payment_credit(text) set search_path = '';
alter function billing._refunded_cents(text) set search_path = '';
alter function billing._number_json(public.user_phone_numbers) set search_path = '';
alter function billing._held_amount(uuid) set search_path = '';
alter function billing._held_free_minutes(uuid) set search_path = '';
alter function billing._call_terms(public.call_balance) set search_path = '';
alter function billing._current_user() set search_path = '';
alter function billing._touch_account(uuid) set search_path = '';
alter function billing._state(public.call_balance) set search_path = '';
alter function billing._destination_allowed(text, text) set search_path = '';
alter function billing._callback_seconds(text, text) set search_path = '';
alter function billing._check_money(numeric, text) set search_path = '';
alter function billing._next_renewal(timestamptz, smallint) set search_path = '';
alter function billing._number_terms(public.call_balance) set search_path = '';

/* ------------------------------------------------------------------------
 * The account as a read sees it
 * ------------------------------------------------------------------------ */

/*
 * The account of p_user_id as the next money operation will find it, without
 * writing: the stored row moved into the current UTC month (free minutes back
 * to the plan's allowance, as billing._lock_account stores them), or, when the
 * user has no row yet, the row account creation would insert (the plan named
 * in app metadata, else the default plan, with that plan's free minutes and
 * auto-refill defaults and a zero balance). PT404 for an unknown user.
 */
create or replace function billing._read_account(p_user_id uuid)
returns public.call_balance
language plpgsql
stable
set search_path = ''
as $$
declare
    v_account public.call_balance;
    v_plan public.billing_plans;
    v_requested text;
    v_now timestamptz := billing.now();
begin
    select cb.* into v_account from public.call_balance as cb where cb.user_id = p_user_id;
    if not found then
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
        -- As billing._ensure_account inserts it, with the table's defaults for the rest.
        return pg_catalog.jsonb_populate_record(
            null::public.call_balance,
            pg_catalog.jsonb_build_object(
                'user_id', p_user_id,
                'plan_id', v_plan.id,
                'balance', 0,
                'free_minutes_remaining', v_plan.free_minutes_monthly,
                'free_minutes_last_reset', v_now,
                'has_claimed_free_number', false,
                'auto_refill_enabled', false,
                'auto_refill_threshold', v_plan.default_auto_refill_threshold,
                'auto_refill_amount', v_plan.auto_refill_amounts[1],
                'auto_refill_monthly_cap', 500,
                'auto_refill_failures', 0,
                'created_at', v_now,
                'updated_at', v_now
            )
        );
    end if;
    if pg_catalog.date_trunc('month', v_account.free_minutes_last_reset, 'UTC')
        < pg_catalog.date_trunc('month', v_now, 'UTC') then
        select p.free_minutes_monthly into v_account.free_minutes_remaining
        from public.billing_plans as p
        where p.id = v_account.plan_id;
        v_account.free_minutes_last_reset := v_now;
    end if;
    return v_account;
end
$$;

revoke execute on function billing._read_account(uuid) from public;

/* ------------------------------------------------------------------------
 * The user entry points: security definer in billing, for authenticated
 * ------------------------------------------------------------------------ */

grant usage on schema billing to authenticated;

-- The billing state object of the signed-in user; writes nothing.
create or replace function billing.billing_me()
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
    return billing._state(billing._read_account(billing._current_user()));
end
$$;

comment on function billing.billing_me() is
'public.billing_me() for the signed-in user (auth.uid()); reads only.';

revoke execute on function billing.billing_me() from public, anon;
grant execute on function billing.billing_me() to authenticated;

-- Whether the signed-in user may start a call now; writes nothing.
create or replace function billing.check_can_call()
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
    v_account public.call_balance := billing._read_account(billing._current_user());
    v_terms jsonb := billing._call_terms(v_account);
    v_price numeric(12, 2);
begin
    if v_terms ->> 'reason' = 'no_active_number' then
        perform billing._raise('PT403', 'Get a phone number before making calls.');
    end if;
    if not (v_terms ->> 'allowed')::boolean then
        select p.price_per_minute into v_price
        from public.billing_plans as p
        where p.id = v_account.plan_id;
        raise exception using
            errcode = 'PT402',
            message = pg_catalog.format(
                'Insufficient balance: calls need a balance of at least $%s. Top up to call.',
                v_terms ->> 'minRequired'),
            detail = pg_catalog.jsonb_build_object(
                'minRequired', v_terms -> 'minRequired',
                'price', v_price,
                'balance', v_account.balance
            )::text;
    end if;
    return pg_catalog.jsonb_build_object(
        'allowed', true,
        'maxSeconds', v_terms -> 'maxSeconds',
        'minRequired', v_terms -> 'minRequired',
        'callerId', v_terms -> 'callerId',
        'balance', v_account.balance,
        'freeMinutesRemaining', v_account.free_minutes_remaining
    );
end
$$;

comment on function billing.check_can_call() is
'public.check_can_call() for the signed-in user (auth.uid()); reads only.';

revoke execute on function billing.check_can_call() from public, anon;
grant execute on function billing.check_can_call() to authenticated;

-- Validate a top-up amount for the signed-in user; creates the account when missing.
create or replace function billing.prepare_topup(p_amount numeric)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_uid uuid := billing._current_user();
    v_account public.call_balance;
    v_plan public.billing_plans;
    v_email text;
begin
    if p_amount is null then
        perform billing._raise('PT400', 'The top-up amount is required.');
    end if;
    perform billing._check_money(p_amount, 'top-up amount');
    if p_amount <= 0 then
        perform billing._raise('PT400', 'The top-up amount must be positive.');
    end if;
    if p_amount > 10000 then
        perform billing._raise('PT400', 'A top-up cannot exceed $10,000.');
    end if;
    v_account := billing._touch_account(v_uid);
    select p.* into v_plan from public.billing_plans as p where p.id = v_account.plan_id;
    if not (
        p_amount = any(v_plan.top_up_presets)
        or (v_plan.custom_top_up_min is not null and p_amount >= v_plan.custom_top_up_min)
    ) then
        perform billing._raise('PT400',
            case
                when v_plan.custom_top_up_min is null
                    then pg_catalog.format('Choose a top-up of $%s.',
                        pg_catalog.array_to_string(v_plan.top_up_presets, ' or $'))
                else pg_catalog.format('The minimum top-up is $%s.', v_plan.custom_top_up_min)
            end);
    end if;
    select u.email into v_email from auth.users as u where u.id = v_uid;
    return pg_catalog.jsonb_build_object(
        'amount', p_amount::numeric(12, 2),
        'amountCents', (p_amount * 100)::bigint,
        'currency', 'usd',
        'stripeCustomerId', v_account.stripe_customer_id,
        'email', v_email,
        'plan', v_plan.id,
        'userId', v_uid
    );
end
$$;

comment on function billing.prepare_topup(numeric) is
'public.prepare_topup(numeric) for the signed-in user (auth.uid()).';

revoke execute on function billing.prepare_topup(numeric) from public, anon;
grant execute on function billing.prepare_topup(numeric) to authenticated;

-- Change the signed-in user's auto-refill settings; PT400 refuses, never rounds.
create or replace function billing.update_auto_refill_settings(
    p_enabled boolean,
    p_amount numeric default null,
    p_threshold numeric default null
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_uid uuid := billing._current_user();
    v_account public.call_balance;
    v_plan public.billing_plans;
    v_amount numeric(12, 2);
    v_threshold numeric(12, 2);
begin
    if p_enabled is null then
        perform billing._raise('PT400', 'Say whether auto-refill is enabled (true or false).');
    end if;
    -- Checked as given, before the cast to cents could round or overflow.
    perform billing._check_money(p_amount, 'auto-refill amount');
    perform billing._check_money(p_threshold, 'auto-refill threshold');
    v_account := billing._lock_account(v_uid);
    select p.* into v_plan from public.billing_plans as p where p.id = v_account.plan_id;
    if p_amount is not null and p_amount <> all(v_plan.auto_refill_amounts) then
        perform billing._raise('PT400',
            pg_catalog.format('The auto-refill amount must be one of: %s.',
                pg_catalog.array_to_string(v_plan.auto_refill_amounts, ', ')));
    end if;
    if p_threshold is not null and (p_threshold < 5 or p_threshold > 500) then
        perform billing._raise('PT400',
            'The auto-refill threshold must be between $5 and $500, in cents at most.');
    end if;
    v_amount := coalesce(p_amount, v_account.auto_refill_amount);
    v_threshold := coalesce(p_threshold, v_account.auto_refill_threshold);
    if v_amount <> all(v_plan.auto_refill_amounts) then
        perform billing._raise('PT400',
            pg_catalog.format('The auto-refill amount must be one of: %s.',
                pg_catalog.array_to_string(v_plan.auto_refill_amounts, ', ')));
    end if;
    if p_enabled and v_account.stripe_payment_method_id is null then
        perform billing._raise('PT409',
            'Make a top-up first: auto-refill charges the card saved by your last payment.');
    end if;
    update public.call_balance as cb
    set
        auto_refill_enabled = p_enabled,
        auto_refill_amount = v_amount,
        auto_refill_threshold = v_threshold,
        auto_refill_failures = case when p_enabled then 0 else cb.auto_refill_failures end,
        updated_at = billing.now()
    where cb.user_id = v_uid
    returning cb.* into v_account;
    if p_enabled then
        -- Already below the new threshold: refill now rather than after the next call.
        perform billing._after_debit(v_uid, v_account.balance);
    else
        perform billing._cancel_pending_refills(v_uid, 'auto-refill turned off');
    end if;
    select cb.* into v_account from public.call_balance as cb where cb.user_id = v_uid;
    return billing._state(v_account);
end
$$;

comment on function billing.update_auto_refill_settings(boolean, numeric, numeric) is
'public.update_auto_refill_settings(...) for the signed-in user (auth.uid()).';

revoke execute on function billing.update_auto_refill_settings(boolean, numeric, numeric)
from public, anon;
grant execute on function billing.update_auto_refill_settings(boolean, numeric, numeric)
to authenticated;

/* ------------------------------------------------------------------------
 * The public entry points: security invoker, same names, arguments, results
 * ------------------------------------------------------------------------ */

create or replace function public.billing_me()
returns jsonb
language plpgsql
stable
security invoker
set search_path = ''
as $$
begin
    if auth.uid() is null then
        raise exception using errcode = 'PT403', message = 'Sign in first.';
    end if;
    return billing.billing_me();
end
$$;

comment on function public.billing_me() is
'The signed-in user''s balance, free minutes, plan, auto-refill settings and call eligibility.';

revoke execute on function public.billing_me() from public, anon;
grant execute on function public.billing_me() to authenticated;

create or replace function public.check_can_call()
returns jsonb
language plpgsql
stable
security invoker
set search_path = ''
as $$
begin
    if auth.uid() is null then
        raise exception using errcode = 'PT403', message = 'Sign in first.';
    end if;
    return billing.check_can_call();
end
$$;

comment on function public.check_can_call() is
'Whether the signed-in user may start a call now: PT403 without a number, PT402 when short.';

revoke execute on function public.check_can_call() from public, anon;
grant execute on function public.check_can_call() to authenticated;

create or replace function public.prepare_topup(p_amount numeric)
returns jsonb
language plpgsql
security invoker
set search_path = ''
as $$
begin
    if auth.uid() is null then
        raise exception using errcode = 'PT403', message = 'Sign in first.';
    end if;
    return billing.prepare_topup(p_amount);
end
$$;

comment on function public.prepare_topup(numeric) is
'Validate a top-up amount against the plan and return what a Checkout session needs.';

revoke execute on function public.prepare_topup(numeric) from public, anon;
grant execute on function public.prepare_topup(numeric) to authenticated;

create or replace function public.update_auto_refill_settings(
    p_enabled boolean,
    p_amount numeric default null,
    p_threshold numeric default null
)
returns jsonb
language plpgsql
security invoker
set search_path = ''
as $$
begin
    if auth.uid() is null then
        raise exception using errcode = 'PT403', message = 'Sign in first.';
    end if;
    return billing.update_auto_refill_settings(p_enabled, p_amount, p_threshold);
end
$$;

comment on function public.update_auto_refill_settings(boolean, numeric, numeric) is
'Turn auto-refill on or off and choose its amount and threshold; returns billing_me().';

revoke execute on function public.update_auto_refill_settings(boolean, numeric, numeric)
from public, anon;
grant execute on function public.update_auto_refill_settings(boolean, numeric, numeric)
to authenticated;
