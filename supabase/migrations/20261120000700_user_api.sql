/*
 * The user-facing RPCs (schema public, role authenticated).
 *
 * Small security definer entry points: each one acts on auth.uid() only,
 * checks its input, and leaves the rules to the billing functions. Users
 * read their rows directly under RLS; these add what a table cannot say
 * (the monthly reset, estimated minutes, whether a call may start).
 */

/* ------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------ */

-- The signed-in user, or PT403.
create or replace function billing._current_user()
returns uuid
language plpgsql
stable
as $$
declare
    v_uid uuid := auth.uid();
begin
    if v_uid is null then
        perform billing._raise('PT403', 'Sign in first.');
    end if;
    return v_uid;
end
$$;

revoke execute on function billing._current_user() from public;

/*
 * The account for a read: created when missing, and moved into the current
 * month (free minutes reset) when it was last touched in an earlier one. The
 * row lock is taken only when something must change.
 */
create or replace function billing._touch_account(p_user_id uuid)
returns public.call_balance
language plpgsql
as $$
declare
    v_account public.call_balance;
begin
    select cb.* into v_account from public.call_balance as cb where cb.user_id = p_user_id;
    if not found
        or pg_catalog.date_trunc('month', v_account.free_minutes_last_reset, 'UTC')
        < pg_catalog.date_trunc('month', billing.now(), 'UTC') then
        v_account := billing._lock_account(p_user_id);
    end if;
    return v_account;
end
$$;

revoke execute on function billing._touch_account(uuid) from public;

-- The billing state object of docs/rpc.md.
create or replace function billing._state(p_account public.call_balance)
returns jsonb
language plpgsql
stable
as $$
declare
    v_plan public.billing_plans;
    v_terms jsonb := billing._call_terms(p_account);
    v_numbers jsonb;
begin
    select p.* into v_plan from public.billing_plans as p where p.id = p_account.plan_id;
    select coalesce(pg_catalog.jsonb_agg(billing._number_json(n) order by n.created_at), '[]')
    into v_numbers
    from public.user_phone_numbers as n
    where n.user_id = p_account.user_id and n.status in ('active', 'past_due');
    return pg_catalog.jsonb_build_object(
        'balance', p_account.balance,
        'heldAmount', billing._held_amount(p_account.user_id),
        'freeMinutesRemaining', p_account.free_minutes_remaining,
        'hasClaimedFreeNumber', p_account.has_claimed_free_number,
        'estimatedMinutes', p_account.free_minutes_remaining
        + pg_catalog.floor(greatest(p_account.balance, 0) / v_plan.price_per_minute)::integer,
        'status', case
            when p_account.balance < p_account.auto_refill_threshold then 'LOW'
            when p_account.balance >= v_plan.good_balance then 'GOOD'
            else 'OK'
        end,
        'autoRefill', pg_catalog.jsonb_build_object(
            'enabled', p_account.auto_refill_enabled,
            'amount', p_account.auto_refill_amount,
            'threshold', p_account.auto_refill_threshold,
            'monthlyCap', p_account.auto_refill_monthly_cap
        ),
        'lastRefillAt', p_account.last_refill_at,
        'plan', v_plan.id,
        'planName', v_plan.name,
        'pricing', pg_catalog.jsonb_build_object(
            'perMinute', v_plan.price_per_minute,
            'freeMinutesMonthly', v_plan.free_minutes_monthly,
            'minBalance', v_plan.min_balance,
            'numberMonthly', v_plan.number_monthly_price,
            'freeNumbers', v_plan.free_numbers,
            'topUpPresets', pg_catalog.to_jsonb(v_plan.top_up_presets),
            'customTopUpMin', v_plan.custom_top_up_min,
            'autoRefillAmounts', pg_catalog.to_jsonb(v_plan.auto_refill_amounts)
        ),
        'canCall', pg_catalog.jsonb_build_object(
            'allowed', v_terms -> 'allowed',
            'reason', v_terms -> 'reason',
            'minRequired', v_terms -> 'minRequired'
        ),
        'hasPaymentMethod', p_account.stripe_payment_method_id is not null,
        'activeNumbers', v_numbers
    );
end
$$;

revoke execute on function billing._state(public.call_balance) from public;

/* ------------------------------------------------------------------------
 * public.billing_me
 * ------------------------------------------------------------------------ */

create or replace function public.billing_me()
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
begin
    return billing._state(billing._touch_account(billing._current_user()));
end
$$;

comment on function public.billing_me() is
'The signed-in user''s balance, free minutes, plan, auto-refill settings and call eligibility.';

revoke execute on function public.billing_me() from public, anon;
grant execute on function public.billing_me() to authenticated;

/* ------------------------------------------------------------------------
 * public.update_auto_refill_settings
 * ------------------------------------------------------------------------ */

create or replace function public.update_auto_refill_settings(
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
    v_account := billing._lock_account(v_uid);
    select p.* into v_plan from public.billing_plans as p where p.id = v_account.plan_id;
    v_amount := coalesce(p_amount, v_account.auto_refill_amount);
    v_threshold := coalesce(p_threshold, v_account.auto_refill_threshold);
    if v_amount <> all(v_plan.auto_refill_amounts) then
        perform billing._raise('PT400',
            pg_catalog.format('The auto-refill amount must be one of: %s.',
                pg_catalog.array_to_string(v_plan.auto_refill_amounts, ', ')));
    end if;
    if v_threshold <> pg_catalog.round(v_threshold, 2) or v_threshold < 5 or v_threshold > 500 then
        perform billing._raise('PT400',
            'The auto-refill threshold must be between $5 and $500, in cents at most.');
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

comment on function public.update_auto_refill_settings(boolean, numeric, numeric) is
'Turn auto-refill on or off and choose its amount and threshold; returns billing_me().';

revoke execute on function public.update_auto_refill_settings(boolean, numeric, numeric)
from public, anon;
grant execute on function public.update_auto_refill_settings(boolean, numeric, numeric)
to authenticated;

/* ------------------------------------------------------------------------
 * public.prepare_topup
 * ------------------------------------------------------------------------ */

create or replace function public.prepare_topup(p_amount numeric)
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
    if p_amount <= 0 then
        perform billing._raise('PT400', 'The top-up amount must be positive.');
    end if;
    if p_amount > 10000 then
        perform billing._raise('PT400', 'A top-up cannot exceed $10,000.');
    end if;
    if p_amount <> pg_catalog.round(p_amount, 2) then
        perform billing._raise('PT400', 'The top-up amount must be in whole cents.');
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

comment on function public.prepare_topup(numeric) is
'Validate a top-up amount against the plan and return what a Checkout session needs.';

revoke execute on function public.prepare_topup(numeric) from public, anon;
grant execute on function public.prepare_topup(numeric) to authenticated;

/* ------------------------------------------------------------------------
 * public.check_can_call
 * ------------------------------------------------------------------------ */

create or replace function public.check_can_call()
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_account public.call_balance := billing._touch_account(billing._current_user());
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

comment on function public.check_can_call() is
'Whether the signed-in user may start a call now: PT403 without a number, PT402 when short.';

revoke execute on function public.check_can_call() from public, anon;
grant execute on function public.check_can_call() to authenticated;
