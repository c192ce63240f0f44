/*
 * Refills that are no longer needed, money that arrives with sub-cent or
 * infinite amounts, and numbers: candidates the database already holds, the
 * number named in the purchase's ledger row, renewals on the purchase's day
 * of the month.
 *
 * - A waiting refill request is cancelled as soon as a credit lifts the
 *   balance to or above the account's threshold (trigger on call_balance), and
 *   billing.claim_refills cancels, rather than hands out, a request whose
 *   account is at or above its threshold.
 * - Amounts entering as numeric are checked before any cast: NaN, ±Infinity
 *   and fractions of a cent are PT400, never rounded.
 * - billing.numbers_not_held tells buy-number which searched candidates no
 *   account holds, so a held number is never bought at the provider.
 * - Numbers keep the day of the month they were bought on
 *   (renewal_anchor_day): bought on Jan 31, renewed Feb 28, Mar 31, Apr 30.
 */

/* ------------------------------------------------------------------------
 * Money that enters as numeric
 * ------------------------------------------------------------------------ */

-- NaN, ±Infinity and fractions of a cent are refused (PT400); ranges are the caller's.
create or replace function billing._check_money(p_value numeric, p_label text)
returns numeric
language plpgsql
immutable
as $$
begin
    if p_value is null then
        return null;
    end if;
    if p_value in ('NaN'::numeric, 'Infinity'::numeric, '-Infinity'::numeric) then
        perform billing._raise('PT400',
            pg_catalog.format('The %s must be a finite number of dollars.', p_label));
    end if;
    if p_value <> pg_catalog.round(p_value, 2) then
        perform billing._raise('PT400',
            pg_catalog.format('The %s must be in whole cents (at most two decimals).', p_label));
    end if;
    return p_value;
end
$$;

revoke execute on function billing._check_money(numeric, text) from public;

/* ------------------------------------------------------------------------
 * public.update_auto_refill_settings: refuse, never round
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

comment on function public.update_auto_refill_settings(boolean, numeric, numeric) is
'Turn auto-refill on or off and choose its amount and threshold; returns billing_me().';

revoke execute on function public.update_auto_refill_settings(boolean, numeric, numeric)
from public, anon;
grant execute on function public.update_auto_refill_settings(boolean, numeric, numeric)
to authenticated;

/* ------------------------------------------------------------------------
 * public.prepare_topup: NaN and ±Infinity are named as such
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

comment on function public.prepare_topup(numeric) is
'Validate a top-up amount against the plan and return what a Checkout session needs.';

revoke execute on function public.prepare_topup(numeric) from public, anon;
grant execute on function public.prepare_topup(numeric) to authenticated;

/* ------------------------------------------------------------------------
 * Refill requests that are no longer needed
 * ------------------------------------------------------------------------ */

-- A credit lifted the balance to or above the threshold: the waiting request is not needed.
create or replace function billing._cancel_refills_when_funded()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
    perform billing._cancel_pending_refills(
        new.user_id, 'the balance reached the auto-refill threshold before the charge'
    );
    return null;
end
$$;

revoke execute on function billing._cancel_refills_when_funded() from public;

create trigger call_balance_cancel_refills_when_funded
after update of balance on public.call_balance
for each row
when (new.balance > old.balance and new.balance >= new.auto_refill_threshold)
execute function billing._cancel_refills_when_funded();

/*
 * Pending requests whose backoff has passed, and requests a worker claimed
 * more than 10 minutes ago without an outcome (it crashed): the latter keep
 * their idempotency key, so Stripe will not charge twice. A request whose
 * account is at or above its threshold when claimed is cancelled instead.
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
        select
            r.id,
            r.status as old_status,
            cb.balance >= cb.auto_refill_threshold as funded
        from public.refill_requests as r
        inner join public.call_balance as cb on r.user_id = cb.user_id
        where
            (r.status = 'pending' and r.next_attempt_at <= v_now)
            or (r.status = 'processing' and r.claimed_at < v_now - interval '10 minutes')
        order by r.next_attempt_at, r.id
        limit p_limit
        for update of r skip locked
    ),

    cancelled as (
        update public.refill_requests as r
        set
            status = 'cancelled',
            last_error = 'the balance was at or above the auto-refill threshold when claimed',
            completed_at = v_now,
            updated_at = v_now
        from picked
        where r.id = picked.id and picked.funded
        returning r.id
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
        where r.id = picked.id and not picked.funded and cb.user_id = r.user_id
        returning r.*
    )

    select * from claimed;
end
$$;

revoke execute on function billing.claim_refills(integer) from public;
grant execute on function billing.claim_refills(integer) to service_role;

/* ------------------------------------------------------------------------
 * Numbers: candidates no account holds
 * ------------------------------------------------------------------------ */

-- Of the candidates (in the order given, at most 50), those no account holds
-- (pending, active or past due). PT400 for a malformed number.
create or replace function billing.numbers_not_held(p_phone_numbers text [])
returns text []
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
    v_number text;
begin
    if p_phone_numbers is null then
        perform billing._raise('PT400', 'The candidate numbers are required.');
    end if;
    if pg_catalog.cardinality(p_phone_numbers) > 50 then
        perform billing._raise('PT400', 'At most 50 candidate numbers at once.');
    end if;
    foreach v_number in array p_phone_numbers loop
        perform billing._check_phone(v_number);
    end loop;
    return coalesce((
        select pg_catalog.array_agg(c.phone_number order by c.ord)
        from pg_catalog.unnest(p_phone_numbers) with ordinality as c (phone_number, ord)
        where
            c.ord = (
                select min(d.ord)
                from pg_catalog.unnest(p_phone_numbers) with ordinality as d (phone_number, ord)
                where d.phone_number = c.phone_number
            )
            and not exists (
                select from public.user_phone_numbers as n
                where
                    n.phone_number = c.phone_number
                    and n.status in ('pending', 'active', 'past_due')
            )
    ), '{}'::text []);
end
$$;

revoke execute on function billing.numbers_not_held(text []) from public;
grant execute on function billing.numbers_not_held(text []) to service_role;

/* ------------------------------------------------------------------------
 * Renewals on the purchase's day of the month
 * ------------------------------------------------------------------------ */

alter table public.user_phone_numbers
add column renewal_anchor_day smallint check (renewal_anchor_day between 1 and 31);

comment on column public.user_phone_numbers.renewal_anchor_day is
'Day of the month (UTC) the number was bought on; renewals fall on it, or on the '
'last day of shorter months.';

update public.user_phone_numbers as n
set renewal_anchor_day = pg_catalog.date_part(
    'day', coalesce(n.activated_at, n.created_at) at time zone 'UTC'
)::smallint
where n.status in ('active', 'past_due') and n.renewal_anchor_day is null;

-- The renewal one month after p_at: day p_anchor_day (or the month's last), same time of day, UTC.
create or replace function billing._next_renewal(p_at timestamptz, p_anchor_day smallint)
returns timestamptz
language sql
immutable
as $$
    with m as (
        select
            pg_catalog.date_trunc('month', p_at at time zone 'UTC') + interval '1 month' as first,
            (p_at at time zone 'UTC')::time as time_of_day,
            coalesce(p_anchor_day,
                pg_catalog.date_part('day', p_at at time zone 'UTC')::smallint) as anchor
    )

    select
        (
            m.first
            + pg_catalog.make_interval(days => least(
                m.anchor::integer,
                pg_catalog.date_part(
                    'day', m.first + interval '1 month' - interval '1 day'
                )::integer
            ) - 1)
            + m.time_of_day
        ) at time zone 'UTC'
    from m
$$;

revoke execute on function billing._next_renewal(timestamptz, smallint) from public;

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
    v_anchor smallint := pg_catalog.date_part('day', v_now at time zone 'UTC')::smallint;
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
        renewal_anchor_day = v_anchor,
        next_renewal_at = billing._next_renewal(v_now, v_anchor),
        updated_at = v_now
    where n.id = p_purchase_id
    returning n.* into v_number;
    return billing._number_json(v_number);
end
$$;

revoke execute on function billing.confirm_number(uuid, text, text) from public;
grant execute on function billing.confirm_number(uuid, text, text) to service_role;

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
            set
                next_renewal_at = billing._next_renewal(n.next_renewal_at, n.renewal_anchor_day),
                updated_at = v_now
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
                    'phone_number', v_number.phone_number,
                    'period_start', v_number.next_renewal_at)
            );
            update public.user_phone_numbers as n
            set
                status = 'active',
                next_renewal_at = billing._next_renewal(n.next_renewal_at, n.renewal_anchor_day),
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
 * billing.reserve_number: a charge names the number it pays for
 * ------------------------------------------------------------------------ */

/*
 * What the account's next number costs, or PT403 (the plan sells no numbers)
 * or PT402 (too little balance): the rule reserve_number applies, readable
 * before the provider is searched.
 */
create or replace function billing._number_terms(p_account public.call_balance)
returns jsonb
language plpgsql
stable
as $$
declare
    v_plan public.billing_plans;
    v_available numeric(12, 2);
    v_free_available integer;
    v_min_required numeric(12, 2);
begin
    select p.* into v_plan from public.billing_plans as p where p.id = p_account.plan_id;
    if v_plan.number_monthly_price is null then
        perform billing._raise('PT403',
            pg_catalog.format('The %s plan does not include phone numbers.', v_plan.name));
    end if;
    if v_plan.free_numbers > 0 and not p_account.has_claimed_free_number then
        return pg_catalog.jsonb_build_object('isFree', true, 'price', 0);
    end if;
    v_available := p_account.balance - billing._held_amount(p_account.user_id);
    v_free_available := p_account.free_minutes_remaining
        - billing._held_free_minutes(p_account.user_id);
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
                'balance', p_account.balance
            )::text;
    end if;
    return pg_catalog.jsonb_build_object('isFree', false, 'price', v_plan.number_monthly_price);
end
$$;

revoke execute on function billing._number_terms(public.call_balance) from public;

-- {isFree, price} of the user's next number, or PT403/PT402/PT404; changes nothing.
create or replace function billing.check_number_purchase(p_user_id uuid)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
begin
    if p_user_id is null then
        perform billing._raise('PT400', 'The user id is required.');
    end if;
    return billing._number_terms(billing._touch_account(p_user_id));
end
$$;

revoke execute on function billing.check_number_purchase(uuid) from public;
grant execute on function billing.check_number_purchase(uuid) to service_role;

-- A free number may still be reserved without a number (nothing is charged); a paid
-- one is charged only for a named number, so its ledger row and metadata name it.
create or replace function billing.reserve_number(p_user_id uuid, p_phone_number text)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_account public.call_balance;
    v_terms jsonb;
    v_price numeric(12, 2);
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
    if not exists (
        select from public.billing_plans as p
        where p.id = v_account.plan_id and p.number_monthly_price is not null
    ) then
        v_terms := billing._number_terms(v_account);  -- PT403: the plan sells no numbers
    end if;
    if p_phone_number is not null and exists (
        select from public.user_phone_numbers as n
        where n.phone_number = p_phone_number and n.status in ('pending', 'active', 'past_due')
    ) then
        perform billing._raise('PT409', 'This phone number is already taken.');
    end if;
    v_terms := billing._number_terms(v_account);

    if (v_terms ->> 'isFree')::boolean then
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

    -- The charge names the number it pays for: a paid number is decided before it is charged.
    if p_phone_number is null then
        perform billing._raise('PT400',
            'Name the phone number to buy: a paid number is charged for the number it names.');
    end if;
    v_price := (v_terms ->> 'price')::numeric;
    v_entry := billing._post(
        p_user_id, -v_price, 'debit', 'number_purchase',
        pg_catalog.format('Phone number %s, first month', p_phone_number),
        'number:' || v_id || ':purchase', null,
        pg_catalog.jsonb_build_object('number_id', v_id, 'phone_number', p_phone_number)
    );
    insert into public.user_phone_numbers (
        id, user_id, phone_number, is_free, status, monthly_price, charged_amount,
        purchase_transaction_id, created_at, updated_at
    ) values (
        v_id, p_user_id, p_phone_number, false, 'pending', v_price,
        v_price, v_entry.id, v_now, v_now
    );
    perform billing._after_debit(p_user_id, v_entry.balance_before);
    return pg_catalog.jsonb_build_object('purchaseId', v_id, 'isFree', false, 'charged', v_price);
end
$$;

revoke execute on function billing.reserve_number(uuid, text) from public;
grant execute on function billing.reserve_number(uuid, text) to service_role;
