-- Auto-refill: settings, one request in flight, claims, backoff, give-up, monthly cap.

select set_config('billing.now', '2026-11-10 09:00:00+00', true);
select set_config('t.user', tests.create_user('refill@example.test', 'classic')::text, true);
select set_config('t.nocard', tests.create_user('nocard@example.test', 'classic')::text, true);

-- Arrange: $12 paid with a card that is saved.
select tests.authenticate_as_service_role();
select billing.credit_topup(current_setting('t.user')::uuid, 1200, 'pi_first');
select billing.save_payment_method(current_setting('t.user')::uuid, 'cus_r', 'pm_r');

-- Settings, as the user.
select tests.reset_role();
select tests.authenticate_as(current_setting('t.nocard')::uuid);
select tests.assert_raises(
    'select public.update_auto_refill_settings(true)', 'PT409',
    'enabling without a saved card asks for a top-up first'
);
select tests.reset_role();
select tests.authenticate_as(current_setting('t.user')::uuid);
select tests.assert_raises(
    'select public.update_auto_refill_settings(true, 75)', 'PT400', '$75 is not an offered amount'
);
select tests.assert_raises(
    'select public.update_auto_refill_settings(true, 50, 4)', 'PT400', 'a threshold below $5'
);
select tests.assert_raises(
    'select public.update_auto_refill_settings(true, 50, 501)', 'PT400', 'a threshold above $500'
);
select tests.assert_raises(
    'select public.update_auto_refill_settings(null)', 'PT400', 'enabled must be said'
);
select tests.assert_eq(
    public.update_auto_refill_settings(true, 50, 10) -> 'autoRefill',
    '{"enabled": true, "amount": 50.00, "threshold": 10.00, "monthlyCap": 500.00}'::jsonb,
    'auto-refill on: $50 below $10'
);

-- A debit below the threshold enqueues one request; a second debit does not add one.
select tests.reset_role();
select tests.authenticate_as_service_role();
select billing.settle_call('CA-r1', current_setting('t.user')::uuid, 30 * 60);
select billing.settle_call('CA-r2', current_setting('t.user')::uuid, 60);
select tests.assert_eq(
    (select count(*) from public.refill_requests as r
        where r.user_id = current_setting('t.user')::uuid and r.status = 'pending'),
    1::bigint, 'one request in flight for two debits below the threshold'
);
select tests.assert_eq(
    (select count(*) from public.billing_alerts as a
        where a.user_id = current_setting('t.user')::uuid and a.type = 'low_balance'),
    1::bigint, 'one low-balance alert'
);

-- Claims: one worker gets it, with what Stripe needs.
select tests.assert_eq(
    (select to_jsonb(r) - 'id' - 'user_id' - 'created_at' - 'updated_at' - 'claimed_at'
        - 'next_attempt_at' - 'idempotency_key' - 'completed_at' - 'last_error'
        - 'stripe_payment_intent_id' - 'attempt_started_at' - 'awaiting_settlement_since'
        from billing.claim_refills(10) as r),
    '{"amount": 50.00, "amount_cents": 5000, "currency": "usd", "status": "processing",
      "attempts": 1, "stripe_customer_id": "cus_r", "stripe_payment_method_id": "pm_r"}'::jsonb,
    'the claimed request carries amount, customer and card'
);
select tests.assert_eq(
    (select count(*) from billing.claim_refills(10)), 0::bigint, 'nothing left to claim'
);
select set_config(
    't.request',
    (select r.id::text from public.refill_requests as r where r.user_id = current_setting('t.user')::uuid),
    true
);
select tests.assert_eq(
    (select r.idempotency_key from public.refill_requests as r
        where r.id = current_setting('t.request')::uuid),
    'refill_' || current_setting('t.request') || '_1', 'the first attempt''s idempotency key'
);

-- Failures back off; a repeated report of the same failure counts once.
select tests.assert_eq(
    billing.fail_refill(current_setting('t.request')::uuid, 'card_declined')
    - 'requestId' - 'nextAttemptAt',
    '{"status": "pending", "attempts": 1, "failures": 1, "autoRefillEnabled": true,
      "ignored": false}'::jsonb,
    'the first failure waits for a retry'
);
select tests.assert_eq(
    (billing.fail_refill(current_setting('t.request')::uuid, 'card_declined') ->> 'ignored')::boolean,
    true, 'the payment_failed webhook for the same attempt counts no extra failure'
);
select tests.assert_eq(
    (select count(*) from billing.claim_refills(10)), 0::bigint, 'not before the backoff'
);
select tests.reset_role();
select set_config('billing.now', '2026-11-10 09:06:00+00', true);
select tests.authenticate_as_service_role();
select tests.assert_eq(
    (select r.idempotency_key from billing.claim_refills(10) as r),
    'refill_' || current_setting('t.request') || '_2', 'a retry has a new idempotency key'
);
select billing.fail_refill(current_setting('t.request')::uuid, 'card_declined');
select tests.reset_role();
select set_config('billing.now', '2026-11-10 09:30:00+00', true);
select tests.authenticate_as_service_role();
select tests.assert_eq((select count(*) from billing.claim_refills(10)), 1::bigint, 'third try');
select tests.assert_eq(
    billing.fail_refill(current_setting('t.request')::uuid, 'card_declined')
    - 'requestId' - 'nextAttemptAt',
    '{"status": "failed", "attempts": 3, "failures": 3, "autoRefillEnabled": false,
      "ignored": false}'::jsonb,
    'three failures in a row turn auto-refill off'
);
select tests.assert_eq(
    (select cb.auto_refill_enabled from public.call_balance as cb
        where cb.user_id = current_setting('t.user')::uuid),
    false, 'auto-refill is off'
);
select tests.assert_eq(
    (select count(*) from public.billing_alerts as a
        where a.user_id = current_setting('t.user')::uuid and a.type = 'auto_refill_disabled'),
    1::bigint, 'with an alert'
);

-- Turned on again, the next refill succeeds through the payment webhook.
select tests.reset_role();
select tests.authenticate_as(current_setting('t.user')::uuid);
select public.update_auto_refill_settings(true);
select tests.reset_role();
select tests.authenticate_as_service_role();
select set_config('t.request2', (select r.id::text from billing.claim_refills(1) as r), true);
select tests.assert_true(
    current_setting('t.request2') <> '', 'enabling below the threshold enqueued a refill at once'
);
select tests.assert_eq(
    (billing.credit_topup(
        current_setting('t.user')::uuid, 5000, 'pi_refill_1', 'auto_refill',
        jsonb_build_object('refill_request_id', current_setting('t.request2'))
    ) ->> 'balance')::numeric,
    58.90, '$8.90 + $50'
);
select tests.assert_eq(
    (select r.status from public.refill_requests as r
        where r.id = current_setting('t.request2')::uuid),
    'succeeded', 'the credit closed the request'
);
select tests.assert_eq(
    (select cb.auto_refill_failures from public.call_balance as cb
        where cb.user_id = current_setting('t.user')::uuid),
    0, 'a success resets the failure count'
);

-- The monthly cap: $100 allows one more $50 this month, then pauses with an alert.
select tests.reset_role();
update public.call_balance set auto_refill_monthly_cap = 100
where user_id = current_setting('t.user')::uuid;
select tests.authenticate_as_service_role();
select billing.settle_call('CA-r3', current_setting('t.user')::uuid, 490 * 60);
select set_config('t.request3', (select r.id::text from billing.claim_refills(1) as r), true);
select billing.credit_topup(
    current_setting('t.user')::uuid, 5000, 'pi_refill_2', 'auto_refill',
    jsonb_build_object('refill_request_id', current_setting('t.request3'))
);
select billing.settle_call('CA-r4', current_setting('t.user')::uuid, 500 * 60);
select tests.assert_eq(
    (select count(*) from public.refill_requests as r
        where r.user_id = current_setting('t.user')::uuid and r.status in ('pending', 'processing')),
    0::bigint, 'a third $50 this month would pass the $100 cap: no request'
);
select tests.assert_eq(
    (select count(*) from public.billing_alerts as a
        where a.user_id = current_setting('t.user')::uuid and a.type = 'auto_refill_cap_reached'),
    1::bigint, 'the cap pauses auto-refill with an alert'
);
-- Next month the cap starts again.
select tests.reset_role();
select set_config('billing.now', '2026-12-01 08:00:00+00', true);
select tests.authenticate_as_service_role();
select billing.settle_call('CA-r5', current_setting('t.user')::uuid, 60);
select tests.assert_eq(
    (select count(*) from public.refill_requests as r
        where r.user_id = current_setting('t.user')::uuid and r.status = 'pending'),
    1::bigint, 'a new month, a new refill'
);

-- Turning auto-refill off cancels the waiting request.
select tests.reset_role();
select tests.authenticate_as(current_setting('t.user')::uuid);
select public.update_auto_refill_settings(false);
select tests.reset_role();
select tests.assert_eq(
    (select count(*) from public.refill_requests as r
        where r.user_id = current_setting('t.user')::uuid and r.status in ('pending', 'processing')),
    0::bigint, 'no refill waits once auto-refill is off'
);
select tests.assert_eq((select count(*) from monitoring.ledger_drift), 0::bigint, 'no drift');

-- A late failure report of an older attempt does not count against the attempt in flight.
select tests.reset_role();
select set_config('t.late', tests.create_user('late-report@example.test', 'classic')::text, true);
select billing.save_payment_method(
    current_setting('t.late')::uuid, 'cus_late', 'pm_late'
);
select billing.credit_topup(current_setting('t.late')::uuid, 1000, 'pi_late_topup');
select public.update_auto_refill_settings(true, 50, 10)
from (select tests.authenticate_as(current_setting('t.late')::uuid)) as acting;
select tests.reset_role();
select billing.authorize_call('CA_late_1', current_setting('t.late')::uuid);
select billing.settle_call('CA_late_1', current_setting('t.late')::uuid, 60);
select set_config(
    't.late_request',
    (select r.id::text from billing.claim_refills(1000) as r
     where r.user_id = current_setting('t.late')::uuid),
    true
);
select tests.assert_eq(
    (billing.fail_refill(
        current_setting('t.late_request')::uuid, 'card_declined', 'refill_old_attempt'
    ) ->> 'ignored')::boolean,
    true,
    'a report naming another attempt is ignored'
);
select tests.assert_eq(
    (select auto_refill_failures from public.call_balance
     where user_id = current_setting('t.late')::uuid),
    0,
    'the stale report counted no failure'
);
select tests.assert_eq(
    (billing.fail_refill(
        current_setting('t.late_request')::uuid,
        'card_declined',
        (select r.idempotency_key from public.refill_requests as r
         where r.id = current_setting('t.late_request')::uuid)
    ) ->> 'ignored')::boolean,
    false,
    'a report naming the attempt in flight counts'
);
select tests.assert_eq(
    (select auto_refill_failures from public.call_balance
     where user_id = current_setting('t.late')::uuid),
    1,
    'one failure counted'
);
