-- One call per Stripe event: what counts, which currency, which dispute status moves money.

select set_config('t.user', tests.create_user('events@example.test', 'classic')::text, true);
select tests.authenticate_as_service_role();

create temporary table t_events (event_name text primary key, payload jsonb) on commit drop;
grant all on t_events to service_role;

insert into t_events (event_name, payload)
select
    e.event_name,
    jsonb_build_object(
        'id', 'evt_' || e.event_name, 'object', 'event', 'type', e.event_type,
        'livemode', false, 'api_version', '2026-10-28.endive',
        'data', jsonb_build_object('object', e.obj)
    ) as payload
from (values
    ('paid', 'checkout.session.completed', jsonb_build_object(
        'id', 'cs_1', 'object', 'checkout.session', 'amount_total', 5000, 'currency', 'usd',
        'payment_intent', 'pi_1', 'payment_status', 'paid', 'customer', 'cus_1',
        'metadata', jsonb_build_object('purpose', 'topup', 'user_id', current_setting('t.user'))
    )),
    ('same_payment', 'payment_intent.succeeded', jsonb_build_object(
        'id', 'pi_1', 'object', 'payment_intent', 'amount', 5000, 'amount_received', 5000,
        'currency', 'usd',
        'metadata', jsonb_build_object('purpose', 'topup', 'user_id', current_setting('t.user'))
    )),
    ('unpaid', 'checkout.session.completed', jsonb_build_object(
        'id', 'cs_2', 'object', 'checkout.session', 'amount_total', 5000, 'currency', 'usd',
        'payment_intent', 'pi_2', 'payment_status', 'unpaid',
        'metadata', jsonb_build_object('purpose', 'topup', 'user_id', current_setting('t.user'))
    )),
    ('yen', 'payment_intent.succeeded', jsonb_build_object(
        'id', 'pi_yen', 'object', 'payment_intent', 'amount', 1000, 'amount_received', 1000,
        'currency', 'jpy',
        'metadata', jsonb_build_object('purpose', 'topup', 'user_id', current_setting('t.user'))
    )),
    ('rupees', 'checkout.session.completed', jsonb_build_object(
        'id', 'cs_inr', 'object', 'checkout.session', 'amount_total', 1000, 'currency', 'inr',
        'payment_intent', 'pi_inr', 'payment_status', 'paid',
        'metadata', jsonb_build_object('purpose', 'topup', 'user_id', current_setting('t.user'))
    )),
    ('inquiry', 'charge.dispute.created', jsonb_build_object(
        'id', 'dp_inq', 'object', 'dispute', 'amount', 5000, 'currency', 'usd',
        'payment_intent', 'pi_1', 'status', 'warning_needs_response'
    )),
    ('inquiry_closed', 'charge.dispute.closed', jsonb_build_object(
        'id', 'dp_inq', 'object', 'dispute', 'amount', 5000, 'currency', 'usd',
        'payment_intent', 'pi_1', 'status', 'warning_closed'
    )),
    ('chargeback', 'charge.dispute.created', jsonb_build_object(
        'id', 'dp_cb', 'object', 'dispute', 'amount', 2000, 'currency', 'usd',
        'payment_intent', 'pi_1', 'status', 'needs_response'
    )),
    ('withdrawn', 'charge.dispute.funds_withdrawn', jsonb_build_object(
        'id', 'dp_cb', 'object', 'dispute', 'amount', 2000, 'currency', 'usd',
        'payment_intent', 'pi_1', 'status', 'needs_response'
    )),
    ('reinstated', 'charge.dispute.funds_reinstated', jsonb_build_object(
        'id', 'dp_cb', 'object', 'dispute', 'amount', 2000, 'currency', 'usd',
        'payment_intent', 'pi_1', 'status', 'won'
    )),
    ('won', 'charge.dispute.closed', jsonb_build_object(
        'id', 'dp_cb', 'object', 'dispute', 'amount', 2000, 'currency', 'usd',
        'payment_intent', 'pi_1', 'status', 'won'
    )),
    ('foreign_user', 'checkout.session.completed', jsonb_build_object(
        'id', 'cs_3', 'object', 'checkout.session', 'amount_total', 5000, 'currency', 'usd',
        'payment_intent', 'pi_3', 'payment_status', 'paid',
        'metadata', jsonb_build_object('purpose', 'topup', 'user_id', 'not-a-uuid')
    ))
) as e (event_name, event_type, obj);

create function pg_temp.apply(p_name text) returns jsonb
language sql as $$
    select billing.apply_stripe_event(e.payload, false) from t_events as e where e.event_name = p_name
$$;

create function pg_temp.balance() returns numeric
language sql as $$
    select cb.balance from public.call_balance as cb
    where cb.user_id = current_setting('t.user')::uuid
$$;

-- A paid checkout credits once, even when the same payment comes again as another event.
select tests.assert_eq(pg_temp.apply('paid') ->> 'outcome', 'applied', 'a paid checkout applies');
select tests.assert_eq(pg_temp.apply('paid') ->> 'outcome', 'duplicate event', 'a replay is a duplicate');
select tests.assert_eq(pg_temp.apply('same_payment') -> 'effect' ->> 'duplicate', 'true',
    'the payment intent of the same payment credits nothing more');
select tests.assert_eq(pg_temp.balance(), 50.00, '$50 credited once');
select tests.assert_eq(pg_temp.apply('unpaid') ->> 'outcome', 'skipped', 'an unpaid session waits');
select tests.assert_eq(
    billing.apply_stripe_event(
        '{"id": "evt_x", "type": "customer.created", "livemode": false,
          "api_version": "2026-10-28.endive", "data": {"object": {}}}', false
    )
    ->> 'reason', 'event type not handled', 'other event types are acknowledged'
);
select tests.assert_eq(billing.apply_stripe_event('[1, 2]', false) ->> 'reason', 'not a Stripe event',
    'a JSON array is no event');
select tests.assert_raises('select pg_temp.apply(''foreign_user'')', 'PT400',
    'a malformed user id in the metadata is refused');

-- Only USD is credited; another currency is recorded and flagged for the operator.
select tests.assert_eq(pg_temp.apply('yen') ->> 'outcome', 'not credited', '1000 JPY credits nothing');
select tests.assert_eq(pg_temp.apply('rupees') ->> 'outcome', 'not credited',
    '1000 INR paise credit nothing');
select tests.assert_eq(pg_temp.balance(), 50.00, 'the balance ignores foreign currencies');
select tests.assert_eq(
    (select count(*) from public.stripe_events where event_id in ('evt_yen', 'evt_rupees'))::integer,
    2, 'both events are recorded with their ids'
);
select tests.assert_eq(
    (select array_agg(a.metadata ->> 'currency' order by a.metadata ->> 'currency')
        from public.operator_alerts as a where a.kind = 'payment_not_credited'),
    array['inr', 'jpy'], 'each foreign payment raises one operator alert'
);
select tests.assert_eq(
    (select a.metadata ->> 'eventId' from public.operator_alerts as a
        where a.metadata ->> 'paymentIntentId' = 'pi_yen'),
    'evt_yen', 'the alert names the event'
);

-- An inquiry withdraws nothing and its close gives nothing back.
select tests.assert_eq(pg_temp.apply('inquiry') ->> 'outcome', 'skipped', 'an inquiry moves no money');
select tests.assert_eq(pg_temp.apply('inquiry_closed') ->> 'outcome', 'skipped',
    'an inquiry closed moves no money');
select tests.assert_eq(pg_temp.balance(), 50.00, 'the balance is untouched by an inquiry');

-- A chargeback debits once (created and funds_withdrawn are the same withdrawal)...
select tests.assert_eq(pg_temp.apply('chargeback') ->> 'outcome', 'applied', 'a chargeback applies');
select tests.assert_eq(pg_temp.apply('withdrawn') -> 'effect' ->> 'reversedCents', '0',
    'funds_withdrawn of the same dispute takes nothing more');
select tests.assert_eq(pg_temp.balance(), 30.00, '$20 withdrawn once');
-- ... and reinstated funds come back once.
select tests.assert_eq(pg_temp.apply('reinstated') -> 'effect' ->> 'restoredCents', '2000',
    'funds_reinstated gives the $20 back');
select tests.assert_eq(pg_temp.apply('won') -> 'effect' ->> 'restoredCents', '0',
    'closed as won gives nothing more');
select tests.assert_eq(pg_temp.balance(), 50.00, 'the balance is whole again');
select tests.assert_eq(
    (select count(*) from public.balance_transactions
        where user_id = current_setting('t.user')::uuid)::integer,
    3, 'one credit, one withdrawal, one reinstatement'
);

-- Only service_role may apply events.
select tests.authenticate_as(current_setting('t.user')::uuid);
select tests.assert_raises('select pg_temp.apply(''paid'')', '42501',
    'a user cannot apply a Stripe event');
select tests.clear_authentication();
select tests.assert_raises('select billing.apply_stripe_event(''{}'', false)', '42501',
    'anon cannot apply a Stripe event');
