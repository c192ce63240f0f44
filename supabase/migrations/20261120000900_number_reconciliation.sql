/*
 * Number reconciliation: purchases that never finished.
 *
 * buy-number reserves (and charges) before buying at Twilio, then confirms.
 * When the function dies in between, the purchase stays pending with its
 * charge kept, and Twilio may hold a number no account has. The jobs call
 * billing.stale_number_purchases to cancel (and refund) such purchases, and
 * billing.unknown_number_sids to find the numbers Twilio holds for this
 * system that no account owns, so they can be released.
 */

create index user_phone_numbers_pending_idx
on public.user_phone_numbers (created_at)
where status = 'pending';

create index user_phone_numbers_provider_sid_idx
on public.user_phone_numbers (provider_sid)
where provider_sid is not null;

-- Pending purchases older than p_older_than (10 minutes: far past any function's time limit).
create or replace function billing.stale_number_purchases(
    p_now timestamptz default null,
    p_limit integer default 50,
    p_older_than interval default interval '10 minutes'
)
returns setof public.user_phone_numbers
language plpgsql
stable
security definer
set search_path = ''
as $$
begin
    if p_limit is null or p_limit < 1 or p_limit > 1000 then
        perform billing._raise('PT400', 'The limit must be between 1 and 1000.');
    end if;
    if p_older_than is null or p_older_than < interval '1 minute' then
        perform billing._raise('PT400', 'A purchase is stale after one minute at the earliest.');
    end if;
    return query
    select n.*
    from public.user_phone_numbers as n
    where n.status = 'pending' and n.created_at < coalesce(p_now, billing.now()) - p_older_than
    order by n.created_at
    limit p_limit;
end
$$;

revoke execute on function billing.stale_number_purchases(timestamptz, integer, interval)
from public;
grant execute on function billing.stale_number_purchases(timestamptz, integer, interval)
to service_role;

-- Of the provider sids given, those no purchase records (in any status but cancelled).
create or replace function billing.unknown_number_sids(p_sids text [])
returns setof text
language sql
stable
security definer
set search_path = ''
as $$
    select s.sid
    from pg_catalog.unnest(coalesce(p_sids, '{}'::text [])) as s (sid)
    where not exists (
        select from public.user_phone_numbers as n
        where n.provider_sid = s.sid and n.status <> 'cancelled'
    )
$$;

revoke execute on function billing.unknown_number_sids(text []) from public;
grant execute on function billing.unknown_number_sids(text []) to service_role;
