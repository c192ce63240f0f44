-- Stripe lifecycles: the key's mode, the pinned version, refunds one by one, caps, refills.

select set_config('t.user', tests.create_user('lifecycles@example.test', 'classic')::text, true);
select tests.authenticate_as_service_role();

create function pg_temp.event(p_type text, p_object jsonb, p_extra jsonb default '{}') returns jsonb
language sql as $$
    select jsonb_build_object(
        'id', 'evt_' || md5(random()::text), 'object', 'event', 'type', p_type,
        'livemode', false, 'api_version', '2026-10-28.endive',
        'data', jsonb_build_object('object', p_object)
    ) || p_extra
$$;

create function pg_temp.balance() returns numeric
language sql as $$
    select cb.balance from public.call_balance as cb
    where cb.user_id = current_setting('t.user')::uuid
$$;

create function pg_temp.refund(p_id text, p_pi text, p_cents integer, p_status text) returns jsonb
language sql as $$
    select billing.apply_stripe_event(pg_temp.event('refund.updated', jsonb_build_object(
        'id', p_id, 'object', 'refund', 'amount', p_cents, 'currency', 'usd',
        'payment_intent', p_pi, 'status', p_status
    )), false)
$$;

-- Another mode or another API version: refused, alerted, never credited.
select tests.assert_eq(
    billing.apply_stripe_event(pg_temp.event('payment_intent.succeeded', jsonb_build_object(
        'id', 'pi_live', 'amount', 5000, 'amount_received', 5000, 'currency', 'usd',
        'metadata', jsonb_build_object('purpose', 'topup', 'user_id', current_setting('t.user'))
    ), '{"livemode": true}'), false) ->> 'outcome',
    'refused', 'a live event is refused by a test-mode system'
);
select tests.assert_eq(
    billing.apply_stripe_event(pg_temp.event('payment_intent.succeeded', jsonb_build_object(
        'id', 'pi_live', 'amount', 5000, 'amount_received', 5000, 'currency', 'usd',
        'metadata', jsonb_build_object('purpose', 'topup', 'user_id', current_setting('t.user'))
    )), true) ->> 'reason',
    'a test-mode event reached a live-mode system', 'a test event is refused by a live system'
);
select tests.assert_eq(
    billing.apply_stripe_event(pg_temp.event('customer.created', '{}',
        '{"api_version": "2025-09-30.clover"}'), false) ->> 'reason',
    'rendered in API version 2025-09-30.clover, not 2026-10-28.endive',
    'another API version is refused'
);
select tests.assert_eq(pg_temp.balance(), 0.00, 'nothing refused was credited');
select tests.assert_eq(
    (select count(*) from public.operator_alerts where kind = 'stripe_event_refused')::integer, 3,
    'each refusal is an operator alert'
);
select tests.assert_raises(
    'select billing.apply_stripe_event(''{"id": "evt_1", "type": "x"}'', null)', 'PT400',
    'the mode is required'
);

-- A payment of $50; a pending refund of $20 debits, its failure gives it back, once.
select billing.credit_topup(current_setting('t.user')::uuid, 5000, 'pi_r');
select tests.assert_eq(pg_temp.refund('re_1', 'pi_r', 2000, 'pending') ->> 'outcome', 'applied',
    'a pending refund applies');
select tests.assert_eq(pg_temp.balance(), 30.00, 'a pending refund counts');
select pg_temp.refund('re_1', 'pi_r', 2000, 'succeeded');
select tests.assert_eq(pg_temp.balance(), 30.00, 'its success takes nothing more');
select pg_temp.refund('re_1', 'pi_r', 2000, 'failed');
select pg_temp.refund('re_1', 'pi_r', 2000, 'failed');
select tests.assert_eq(pg_temp.balance(), 50.00, 'its failure gives the $20 back once');
select tests.assert_eq(
    billing.apply_stripe_event(pg_temp.event('charge.refunded', jsonb_build_object(
        'id', 'ch_r', 'object', 'charge', 'amount_refunded', 2000, 'currency', 'usd',
        'payment_intent', 'pi_r'
    )), false) ->> 'outcome',
    'skipped', 'a late charge.refunded of a payment with refund events takes nothing'
);
-- Failed first, then pending: nothing is ever taken.
select pg_temp.refund('re_2', 'pi_r', 1000, 'failed');
select pg_temp.refund('re_2', 'pi_r', 1000, 'pending');
select tests.assert_eq(pg_temp.balance(), 50.00, 'a refund known to have failed never debits');

-- charge.refunded first (no refund events yet), then the refund's own events.
select billing.credit_topup(current_setting('t.user')::uuid, 1000, 'pi_c');
select billing.apply_stripe_event(pg_temp.event('charge.refunded', jsonb_build_object(
    'id', 'ch_c', 'object', 'charge', 'amount_refunded', 400, 'currency', 'usd',
    'payment_intent', 'pi_c'
)), false);
select tests.assert_eq(pg_temp.balance(), 56.00, 'the cumulative refund debits $4');
select pg_temp.refund('re_3', 'pi_c', 400, 'pending');
select tests.assert_eq(pg_temp.balance(), 56.00, 'the refund it counted takes nothing more');
select pg_temp.refund('re_3', 'pi_c', 400, 'failed');
select tests.assert_eq(pg_temp.balance(), 60.00, 'its failure gives back what charge.refunded took');

-- A refund and a dispute together never reverse more than the payment credited.
select billing.credit_topup(current_setting('t.user')::uuid, 5000, 'pi_d');
select pg_temp.refund('re_4', 'pi_d', 2000, 'succeeded');
select tests.assert_eq(billing.reverse_dispute('pi_d', 'dp_d', 5000) ->> 'reversedCents', '3000',
    'a full-amount dispute after a $20 refund takes $30');
select tests.assert_eq(pg_temp.balance(), 60.00, '$50 paid, $50 reversed in all');
select tests.assert_eq(billing.restore_dispute('pi_d', 'dp_d', 5000) ->> 'restoredCents', '3000',
    'a won dispute gives back what it took');
select billing.credit_topup(current_setting('t.user')::uuid, 1000, 'pi_f');
select pg_temp.refund('re_5', 'pi_f', 1000, 'succeeded');
select tests.assert_eq(billing.reverse_dispute('pi_f', 'dp_f', 1000) ->> 'reversedCents', '0',
    'a fully refunded payment''s dispute withdraws nothing');

-- Bad input changes nothing.
select tests.assert_raises('select billing.apply_refund(''pi_r'', ''re_x'', 100, ''lost'')',
    'PT400', 'an unknown refund status is refused');
select tests.assert_raises('select billing.apply_refund(''pi_r'', ''re_x'', -1, ''pending'')',
    'PT400', 'a negative refund is refused');
select tests.assert_raises(
    'select billing.record_refill_attempt(gen_random_uuid(), ''k'', ''[1]'')', 'PT400',
    'a refill attempt report needs a PaymentIntent'
);
select tests.assert_raises(
    'select billing.record_refill_attempt(gen_random_uuid(), ''k'', null)', 'PT404',
    'an unknown refill request'
);
select tests.assert_raises('select billing.claim_refill_lookups(0)', 'PT400',
    'the look-up limit is checked');

-- A refill whose PaymentIntent is processing stays in flight; a day later it is looked up.
select tests.reset_role();
update public.call_balance
set stripe_customer_id = 'cus_l', stripe_payment_method_id = 'pm_l', auto_refill_enabled = true,
    auto_refill_threshold = 100
where user_id = current_setting('t.user')::uuid;
insert into public.refill_requests (user_id, amount) values (current_setting('t.user')::uuid, 50);
select tests.authenticate_as_service_role();
select set_config('t.key', (select r.idempotency_key from billing.claim_refills(10) as r), true);
select set_config('t.request', (select r.id::text from public.refill_requests as r
    where r.user_id = current_setting('t.user')::uuid), true);
select tests.assert_eq(
    billing.record_refill_attempt(current_setting('t.request')::uuid, current_setting('t.key'),
        jsonb_build_object('id', 'pi_p', 'status', 'processing', 'amount', 5000, 'currency', 'usd',
            'metadata', jsonb_build_object('refill_request_id', current_setting('t.request'),
                'refill_attempt', current_setting('t.key')))) ->> 'outcome',
    'processing', 'a processing bank debit is in flight'
);
select set_config('billing.now', (now() + interval '2 hours')::text, true);
select tests.assert_eq((select count(*) from billing.claim_refills(10))::integer, 0,
    'an attempt in flight is never handed out again');
select tests.assert_eq((select count(*) from billing.claim_refill_lookups(10))::integer, 0,
    'nor looked up within the day');
select set_config('billing.now', (now() + interval '23 hours 1 minute')::text, true);
select tests.assert_eq(
    (select r.stripe_payment_intent_id from billing.claim_refill_lookups(10) as r), 'pi_p',
    'after 23 hours it is looked up by its stored id'
);
select tests.assert_raises(
    format('select billing.record_refill_attempt(%L, %L, %L)', current_setting('t.request'),
        current_setting('t.key'), '{"id": "pi_z", "status": "succeeded", "metadata": {}}'),
    'PT409', 'a PaymentIntent of another attempt is refused'
);
select tests.assert_eq(
    billing.record_refill_attempt(current_setting('t.request')::uuid, current_setting('t.key'),
        jsonb_build_object('id', 'pi_p', 'status', 'succeeded', 'amount', 5000,
            'amount_received', 5000, 'currency', 'usd',
            'metadata', jsonb_build_object('refill_request_id', current_setting('t.request'),
                'refill_attempt', current_setting('t.key')))) ->> 'outcome',
    'charged', 'a settled attempt is credited'
);
select tests.assert_eq(
    (select r.status from public.refill_requests as r where r.id = current_setting('t.request')::uuid),
    'succeeded', 'and its request closed'
);

-- Only service_role may call these.
select tests.authenticate_as(current_setting('t.user')::uuid);
select tests.assert_raises('select billing.apply_refund(''pi_r'', ''re_9'', 100, ''pending'')',
    '42501', 'a user cannot apply a refund');
select tests.clear_authentication();
select tests.assert_raises('select billing.claim_refill_lookups(1)', '42501',
    'anon cannot claim look-ups');
