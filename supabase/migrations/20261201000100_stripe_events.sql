/*
 * Stripe events, each decided by one SQL call.
 *
 * The worker verifies the Stripe-Signature header and hands the event, as
 * Stripe sent it, to billing.apply_stripe_event: one statement that decides
 * what the event means, dedupes it on its id and applies its effect in the
 * same transaction. Which fields count, which currency is credited and which
 * dispute status moves money are decided here:
 *
 * - Credits: a paid Checkout Session (`amount_total`, `payment_status =
 *   paid`) or a succeeded PaymentIntent (`amount_received`) carrying this
 *   system's metadata. Only USD becomes dollars; a payment in another
 *   currency credits nothing and raises an operator alert with its event id.
 * - Disputes move money when Stripe moves it. An inquiry (`warning_*`
 *   statuses) withdraws nothing. A chargeback debits once, on
 *   `charge.dispute.funds_withdrawn` or on a created/updated/closed event with
 *   a chargeback status, whichever comes first (deduped on the dispute id);
 *   reinstated funds (`charge.dispute.funds_reinstated`, or closed as `won`)
 *   are given back once.
 * - Refunds reverse the cumulative `amount_refunded` (billing.reverse_refund).
 *
 * Events that are not this system's (other metadata, other types) are
 * answered as skipped and not recorded.
 */

/* ------------------------------------------------------------------------
 * Operator alerts: what a person running the service must look at
 * ------------------------------------------------------------------------ */

create table public.operator_alerts (
    id uuid primary key default gen_random_uuid(),
    kind text not null check (kind ~ '^[a-z_]{1,64}$'),
    message text not null,
    -- the account concerned, when there is one (no foreign key: the alert outlives it)
    user_id uuid,
    metadata jsonb not null default '{}'::jsonb,
    -- one alert per key (e.g. one per Stripe object)
    dedupe_key text unique,
    resolved_at timestamptz,
    created_at timestamptz not null default now()
);

comment on table public.operator_alerts is
'Notices for the people who run the service: money that needs a decision by hand.';

create index operator_alerts_open_created_at_idx on public.operator_alerts (created_at desc)
where resolved_at is null;

alter table public.operator_alerts enable row level security;
-- No policy: service_role reads them (monitoring, `callbalance report`); users never do.

grant select, update (resolved_at) on public.operator_alerts to service_role;

create or replace function billing._operator_alert(
    p_kind text,
    p_message text,
    p_user_id uuid,
    p_metadata jsonb,
    p_dedupe_key text
)
returns void
language sql
set search_path = ''
as $$
    insert into public.operator_alerts (kind, message, user_id, metadata, dedupe_key, created_at)
    values (p_kind, p_message, p_user_id, coalesce(p_metadata, '{}'::jsonb), p_dedupe_key,
        billing.now())
    on conflict (dedupe_key) do nothing
$$;

revoke execute on function billing._operator_alert(text, text, uuid, jsonb, text) from public;

create or replace view monitoring.operator_alerts as
select
    a.created_at,
    a.kind,
    a.message,
    a.user_id,
    a.metadata,
    a.id
from public.operator_alerts as a
where a.resolved_at is null
order by a.created_at desc;

grant select on monitoring.operator_alerts to service_role;

/* ------------------------------------------------------------------------
 * Reading Stripe objects
 * ------------------------------------------------------------------------ */

-- An object id whether Stripe sent it as a string or expanded into an object.
create or replace function billing._stripe_id(p_value jsonb)
returns text
language sql
immutable
set search_path = ''
as $$
    select case pg_catalog.jsonb_typeof(p_value)
        when 'string' then p_value #>> '{}'
        when 'object' then case pg_catalog.jsonb_typeof(p_value -> 'id')
            when 'string' then p_value ->> 'id'
        end
    end
$$;

revoke execute on function billing._stripe_id(jsonb) from public;

-- An amount in the currency's smallest unit: a JSON integer, else null.
create or replace function billing._stripe_amount(p_value jsonb)
returns bigint
language sql
immutable
set search_path = ''
as $$
    select case
        when pg_catalog.jsonb_typeof(p_value) = 'number' and p_value::text ~ '^-?[0-9]{1,18}$'
            then p_value::text::bigint
    end
$$;

revoke execute on function billing._stripe_amount(jsonb) from public;

-- The account named by this system's metadata; a malformed id is refused.
create or replace function billing._stripe_user(p_metadata jsonb)
returns uuid
language plpgsql
immutable
set search_path = ''
as $$
begin
    if coalesce(p_metadata ->> 'user_id', '')
        !~ '^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$' then
        perform billing._raise('PT400', 'The user_id in the metadata is not a uuid.');
    end if;
    return (p_metadata ->> 'user_id')::uuid;
end
$$;

revoke execute on function billing._stripe_user(jsonb) from public;

/* ------------------------------------------------------------------------
 * billing.apply_stripe_event
 * ------------------------------------------------------------------------ */

create or replace function billing.apply_stripe_event(p_event jsonb)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_event_id text;
    v_type text;
    v_object jsonb;
    v_meta jsonb;
    v_purpose text;
    v_user_id uuid;
    v_object_id text;
    v_intent text;
    v_amount bigint;
    v_currency text;
    v_status text;
    v_action text;
    v_customer text;
    v_method text;
    v_error jsonb;
    v_effect jsonb;
begin
    if pg_catalog.jsonb_typeof(p_event) is distinct from 'object'
        or pg_catalog.jsonb_typeof(p_event -> 'id') is distinct from 'string'
        or pg_catalog.jsonb_typeof(p_event -> 'type') is distinct from 'string' then
        return '{"outcome": "skipped", "reason": "not a Stripe event"}'::jsonb;
    end if;
    v_event_id := p_event ->> 'id';
    v_type := p_event ->> 'type';
    v_object := p_event #> '{data,object}';
    if pg_catalog.jsonb_typeof(v_object) is distinct from 'object' then
        return '{"outcome": "skipped", "reason": "event without data.object"}'::jsonb;
    end if;
    v_meta := case
        when pg_catalog.jsonb_typeof(v_object -> 'metadata') = 'object' then v_object -> 'metadata'
        else '{}'::jsonb
    end;
    v_purpose := v_meta ->> 'purpose';
    v_currency := pg_catalog.lower(v_object ->> 'currency');

    /* Decide: what the event asks for, or why nothing. */
    case v_type
        when 'checkout.session.completed', 'checkout.session.async_payment_succeeded' then
            if v_purpose is distinct from 'topup' or coalesce(v_meta ->> 'user_id', '') = '' then
                return '{"outcome": "skipped", "reason": "not a top-up of this system"}'::jsonb;
            end if;
            if (v_object ->> 'payment_status') is distinct from 'paid' then
                return pg_catalog.jsonb_build_object(
                    'outcome', 'skipped',
                    'reason', pg_catalog.format(
                        'payment_status is %s; waiting',
                        coalesce(v_object ->> 'payment_status', 'missing')
                    )
                );
            end if;
            v_intent := billing._stripe_id(v_object -> 'payment_intent');
            v_amount := billing._stripe_amount(v_object -> 'amount_total');
            v_action := 'credit';
        when 'payment_intent.succeeded' then
            if v_purpose is null or v_purpose not in ('topup', 'auto_refill')
                or coalesce(v_meta ->> 'user_id', '') = '' then
                return '{"outcome": "skipped", "reason": "not a payment of this system"}'::jsonb;
            end if;
            v_intent := billing._stripe_id(v_object -> 'id');
            v_amount := coalesce(
                nullif(billing._stripe_amount(v_object -> 'amount_received'), 0),
                billing._stripe_amount(v_object -> 'amount')
            );
            v_action := 'credit';
        when 'payment_intent.payment_failed' then
            if v_purpose is distinct from 'auto_refill'
                or coalesce(v_meta ->> 'refill_request_id', '')
                !~ '^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$' then
                return '{"outcome": "skipped", "reason": "not an auto-refill of this system"}'::jsonb;
            end if;
            v_intent := billing._stripe_id(v_object -> 'id');
            v_action := 'refill_failed';
        when 'charge.refunded' then
            v_intent := billing._stripe_id(v_object -> 'payment_intent');
            v_amount := billing._stripe_amount(v_object -> 'amount_refunded');
            v_object_id := billing._stripe_id(v_object -> 'id');
            v_action := 'refund';
        when
            'charge.dispute.created', 'charge.dispute.updated', 'charge.dispute.closed',
            'charge.dispute.funds_withdrawn', 'charge.dispute.funds_reinstated'
            then
            v_intent := billing._stripe_id(v_object -> 'payment_intent');
            v_amount := billing._stripe_amount(v_object -> 'amount');
            v_object_id := billing._stripe_id(v_object -> 'id');
            v_status := coalesce(v_object ->> 'status', '');
            v_action := case
                when v_type = 'charge.dispute.funds_withdrawn' then 'withdraw'
                when v_type = 'charge.dispute.funds_reinstated' then 'reinstate'
                -- An inquiry: Stripe withdraws nothing, so nothing moves here.
                when v_status like 'warning\_%' then null
                when v_status = 'won' then 'reinstate'
                when v_status in ('needs_response', 'under_review', 'lost') then 'withdraw'
            end;
            if v_action is null then
                return pg_catalog.jsonb_build_object(
                    'outcome', 'skipped',
                    'reason', pg_catalog.format(
                        'dispute status %s moves no funds', coalesce(nullif(v_status, ''), 'missing')
                    )
                );
            end if;
        when 'checkout.session.async_payment_failed' then
            return '{"outcome": "skipped", "reason": "delayed payment failed; nothing to credit"}'::jsonb;
        else
            return '{"outcome": "skipped", "reason": "event type not handled"}'::jsonb;
    end case;

    if v_intent is null
        or (v_action in ('credit', 'refund', 'withdraw', 'reinstate') and v_amount is null)
        or (v_action in ('withdraw', 'reinstate') and v_object_id is null) then
        return '{"outcome": "skipped", "reason": "event without a payment intent or amount"}'::jsonb;
    end if;
    if v_action = 'credit' then
        v_user_id := billing._stripe_user(v_meta);
    end if;

    /* Dedupe on the event id, in the transaction of its effect. */
    perform billing._check_id(v_event_id, 'event id');
    insert into public.stripe_events (event_id, type, object_id, received_at)
    values (
        v_event_id, pg_catalog.left(v_type, 255),
        billing._check_id(coalesce(v_object_id, v_intent), 'object id'), billing.now()
    )
    on conflict (event_id) do nothing;
    if not found then
        return '{"outcome": "duplicate event"}'::jsonb;
    end if;

    /* Only USD is dollars: anything else is left to the operator, never converted. */
    if v_currency is distinct from 'usd' and v_action <> 'refill_failed' then
        if v_action = 'credit' then
            perform billing._operator_alert(
                'payment_not_credited',
                pg_catalog.format(
                    'Payment %s of %s %s was not credited: only USD is credited. Refund or settle it by hand.',
                    v_intent, v_amount, pg_catalog.upper(coalesce(v_currency, '(no currency)'))
                ),
                v_user_id,
                pg_catalog.jsonb_build_object(
                    'eventId', v_event_id, 'eventType', v_type, 'paymentIntentId', v_intent,
                    'amount', v_amount, 'currency', v_currency
                ),
                'payment_not_credited:' || v_intent
            );
        end if;
        return pg_catalog.jsonb_build_object(
            'outcome', 'not credited',
            'reason', pg_catalog.format(
                'currency %s is not credited', coalesce(v_currency, '(none)')
            )
        );
    end if;

    /* Apply. */
    case v_action
        when 'credit' then
            v_effect := billing.credit_topup(
                v_user_id, v_amount, v_intent, v_purpose,
                case
                    when v_type like 'checkout.session.%'
                        then pg_catalog.jsonb_build_object('checkout_session_id', v_object ->> 'id')
                    when coalesce(v_meta ->> 'refill_request_id', '') <> ''
                        then pg_catalog.jsonb_build_object(
                            'refill_request_id', v_meta ->> 'refill_request_id'
                        )
                    else '{}'::jsonb
                end
            );
            v_customer := billing._stripe_id(v_object -> 'customer');
            v_method := billing._stripe_id(v_object -> 'payment_method');
            if v_type like 'payment_intent.%' and v_customer is not null and v_method is not null
                and (v_purpose = 'auto_refill'
                    or coalesce(v_object ->> 'setup_future_usage', '') <> '') then
                perform billing.save_payment_method(v_user_id, v_customer, v_method);
            elsif v_type like 'checkout.session.%' and v_customer is not null then
                -- The account row is locked by the credit above.
                update public.call_balance as cb
                set stripe_customer_id = billing._check_id(v_customer, 'customer id')
                where
                    cb.user_id = v_user_id
                    and cb.stripe_customer_id is distinct from v_customer;
            end if;
        when 'refill_failed' then
            v_error := coalesce(v_object -> 'last_payment_error', '{}'::jsonb);
            v_effect := billing.fail_refill(
                (v_meta ->> 'refill_request_id')::uuid,
                coalesce(
                    v_error ->> 'decline_code', v_error ->> 'code', 'payment_failed'
                ),
                v_meta ->> 'refill_attempt'
            );
        when 'refund' then
            v_effect := billing.reverse_refund(
                v_intent, v_amount, pg_catalog.jsonb_build_object('charge_id', v_object_id)
            );
        when 'withdraw' then
            v_effect := billing.reverse_dispute(v_intent, v_object_id, v_amount);
        when 'reinstate' then
            v_effect := billing.restore_dispute(v_intent, v_object_id, v_amount);
    end case;
    return pg_catalog.jsonb_build_object('outcome', 'applied', 'action', v_action, 'effect', v_effect);
end
$$;

revoke execute on function billing.apply_stripe_event(jsonb) from public;
grant execute on function billing.apply_stripe_event(jsonb) to service_role;
