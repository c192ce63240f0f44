/*
 * Twilio lifecycles: calls whose callbacks never came, numbers by country.
 *
 * Twilio answers a status callback that failed with at most one retry, and only
 * when the connection itself failed, all within 15 seconds; a 5xx from the
 * worker is logged at Twilio and never redelivered. So every open hold older
 * than two minutes is looked up in the Calls API at most every two minutes
 * (billing.claim_holds_to_check): a call whose settlement was lost is settled
 * within minutes, not when its time limit runs out.
 *
 * Numbers: each plan names the countries it sells numbers in (ISO 3166-1
 * alpha-2, US and CA by default). A foreign number costs more than the flat
 * monthly price and often needs an address or a regulatory bundle, so a
 * purchase elsewhere is refused before Twilio is asked (the overload
 * billing.check_number_purchase(user, country, phone number)).
 */

/* ------------------------------------------------------------------------
 * Plans: the countries numbers are sold in
 * ------------------------------------------------------------------------ */

alter table public.billing_plans
add column number_countries text [] not null default array['US', 'CA']::text [],
add constraint billing_plans_number_countries check (
    pg_catalog.array_to_string(number_countries, ',') ~ '^([A-Z]{2}(,|$))*$'
);

comment on column public.billing_plans.number_countries is
'ISO 3166-1 alpha-2 countries the plan sells phone numbers in (US and CA by default).';

/* ------------------------------------------------------------------------
 * Calls: when reconciliation last asked Twilio about a hold
 * ------------------------------------------------------------------------ */

alter table public.call_holds
add column checked_at timestamptz;

comment on column public.call_holds.checked_at is
'When reconciliation last looked the call up in Twilio''s Calls API.';

/* ------------------------------------------------------------------------
 * billing.claim_holds_to_check: every open hold, looked up within minutes
 * ------------------------------------------------------------------------ */

/*
 * Open holds older than two minutes that reconciliation has not looked up in
 * the last two minutes, oldest first, claimed (skip locked) and stamped
 * checked_at, so several job processes share them and Twilio is asked about a
 * running call at most every two minutes. A call whose status callbacks were
 * lost (a 5xx is not redelivered by Twilio) is settled on the next lookup
 * after it ended. Returns the same columns as billing.stale_holds.
 */
create or replace function billing.claim_holds_to_check(
    p_now timestamptz default null,
    p_limit integer default 100
)
returns table (call_sid text, user_id uuid, created_at timestamptz, max_seconds integer)
language plpgsql
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
    with due as (
        select h.id
        from public.call_holds as h
        where
            h.released_at is null
            and h.created_at + interval '2 minutes' < v_now
            and (h.checked_at is null or h.checked_at + interval '2 minutes' < v_now)
        order by h.created_at, h.id
        limit p_limit
        for update skip locked
    )

    update public.call_holds as h
    set checked_at = v_now
    from due
    where h.id = due.id
    returning h.call_sid, h.user_id, h.created_at, h.max_seconds;
end
$$;

revoke execute on function billing.claim_holds_to_check(timestamptz, integer) from public;
grant execute on function billing.claim_holds_to_check(timestamptz, integer) to service_role;

/* ------------------------------------------------------------------------
 * billing.check_number_purchase: the country is the plan's to decide
 * ------------------------------------------------------------------------ */

-- The E.164 calling code of a country numbers may be sold in; null when not known here.
create or replace function billing._calling_code(p_country text)
returns text
language sql
immutable
set search_path = ''
as $$
    select c.code
    from (
        values
        ('US', '+1'), ('CA', '+1'), ('GB', '+44'), ('IE', '+353'), ('FR', '+33'),
        ('DE', '+49'), ('ES', '+34'), ('IT', '+39'), ('NL', '+31'), ('BE', '+32'),
        ('AU', '+61'), ('NZ', '+64'), ('MX', '+52'), ('BR', '+55'), ('JP', '+81')
    ) as c (country, code)
    where c.country = p_country
$$;

revoke execute on function billing._calling_code(text) from public;

/*
 * p_country: where the number is bought (ISO 3166-1 alpha-2, upper case);
 * p_phone_number: the number when the buyer named one (E.164), which must
 * carry that country's calling code. PT400 for a malformed country or number,
 * PT403 when the plan sells no numbers in that country (before anything else,
 * so a foreign request never reaches Twilio), then what
 * billing.check_number_purchase(uuid) answers: {isFree, price}, PT403, PT402
 * or PT404. Changes nothing.
 */
create or replace function billing.check_number_purchase(
    p_user_id uuid,
    p_country text,
    p_phone_number text default null
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_account public.call_balance;
    v_countries text [];
    v_code text;
begin
    if p_user_id is null then
        perform billing._raise('PT400', 'The user id is required.');
    end if;
    if p_country is null or p_country !~ '^[A-Z]{2}$' then
        perform billing._raise(
            'PT400', 'The country must be a two-letter ISO country code, such as US.'
        );
    end if;
    if p_phone_number is not null then
        perform billing._check_phone(p_phone_number);
    end if;
    v_account := billing._touch_account(p_user_id);
    select p.number_countries into v_countries
    from public.billing_plans as p
    where p.id = v_account.plan_id and p.number_monthly_price is not null;
    if not found then
        return billing._number_terms(v_account);  -- PT403: the plan sells no numbers
    end if;
    if not p_country = any(v_countries) then
        perform billing._raise(
            'PT403',
            pg_catalog.format(
                'Phone numbers in %s are not sold on your plan; it sells numbers in %s.',
                p_country, pg_catalog.array_to_string(v_countries, ', ')
            ),
            pg_catalog.jsonb_build_object(
                'country', p_country, 'countries', pg_catalog.to_jsonb(v_countries)
            )::text
        );
    end if;
    if p_phone_number is not null then
        v_code := billing._calling_code(p_country);
        if v_code is null or not pg_catalog.starts_with(p_phone_number, v_code) then
            perform billing._raise(
                'PT400',
                pg_catalog.format('The phone number %s is not a number in %s.',
                    p_phone_number, p_country)
            );
        end if;
    end if;
    return billing._number_terms(v_account);
end
$$;

revoke execute on function billing.check_number_purchase(uuid, text, text) from public;
grant execute on function billing.check_number_purchase(uuid, text, text) to service_role;
