-- Stripe: credits once per payment intent, reversals in any order, webhook replays.

select set_config('t.user', tests.create_user('payer@example.test', 'classic')::text, true);
select set_config('t.other', tests.create_user('other@example.test', 'classic')::text, true);
select tests.authenticate_as_service_role();

-- Replays of one event id: true once, then false.
select tests.assert_eq(billing.record_stripe_event('evt_1', 'checkout.session.completed', 'cs_1'),
    true, 'the first delivery of an event is new');
select tests.assert_eq(billing.record_stripe_event('evt_1', 'checkout.session.completed', 'cs_1'),
    false, 'a replayed event is not');

-- A credit is idempotent on the payment intent, and amounts enter as cents.
select tests.assert_eq(
    billing.credit_topup(current_setting('t.user')::uuid, 1050, 'pi_a') - 'transactionId',
    '{"balance": 10.50, "duplicate": false, "reversedCents": 0}'::jsonb,
    '1050 cents credit $10.50'
);
select tests.assert_eq(
    (billing.credit_topup(current_setting('t.user')::uuid, 1050, 'pi_a') ->> 'duplicate')::boolean,
    true, 'the same payment intent again is a duplicate'
);
select tests.assert_raises(
    format('select billing.credit_topup(%L, 1050, %L)', current_setting('t.other'), 'pi_a'),
    'PT409', 'a payment intent credited to one account cannot be credited to another'
);
select tests.assert_eq(
    (select cb.balance from public.call_balance as cb where cb.user_id = current_setting('t.user')::uuid),
    10.50, 'credited once'
);

-- Refunds carry Stripe's cumulative amount_refunded: only the difference is reversed.
select tests.assert_eq(
    billing.reverse_refund('pi_a', 300),
    '{"reversedCents": 300, "balance": 7.50, "pending": false}'::jsonb,
    'a partial refund of $3'
);
select tests.assert_eq(
    billing.reverse_refund('pi_a', 300),
    '{"reversedCents": 0, "balance": 7.50, "pending": false}'::jsonb,
    'the same refund again reverses nothing'
);
select tests.assert_eq(
    (billing.reverse_refund('pi_a', 500) ->> 'reversedCents')::integer,
    200, 'a second refund reverses the difference to the cumulative $5'
);
select tests.assert_eq(
    (billing.reverse_refund('pi_a', 400) ->> 'reversedCents')::integer,
    0, 'an older, smaller cumulative amount arriving late reverses nothing'
);
select tests.assert_eq(
    (select cb.balance from public.call_balance as cb where cb.user_id = current_setting('t.user')::uuid),
    5.50, '$10.50 - $5'
);

-- A refund that arrives before the payment's credit is applied when the credit comes.
select tests.assert_eq(
    billing.reverse_refund('pi_b', 2000),
    '{"reversedCents": 0, "balance": null, "pending": true}'::jsonb,
    'a refund of an unknown payment is recorded as pending'
);
select tests.assert_eq(
    billing.credit_topup(current_setting('t.user')::uuid, 5000, 'pi_b') - 'transactionId',
    '{"balance": 35.50, "duplicate": false, "reversedCents": 2000}'::jsonb,
    'the credit applies the pending refund: $5.50 + $50 - $20'
);

-- A lost dispute, before and after the credit; a won dispute restores once.
select tests.assert_eq(
    (billing.reverse_dispute('pi_c', 'dp_1', 1000) ->> 'pending')::boolean,
    true, 'a dispute of an unknown payment waits for the credit'
);
select tests.assert_eq(
    (billing.credit_topup(current_setting('t.user')::uuid, 1000, 'pi_c') ->> 'balance')::numeric,
    35.50, 'the credit and its pending dispute cancel out'
);
select tests.assert_eq(
    (billing.reverse_dispute('pi_c', 'dp_1', 1000) ->> 'reversedCents')::integer,
    0, 'the same dispute again takes nothing'
);
select tests.assert_eq(
    (billing.restore_dispute('pi_c', 'dp_1', 1000) ->> 'restoredCents')::integer,
    1000, 'a dispute won gives the money back'
);
select tests.assert_eq(
    (billing.restore_dispute('pi_c', 'dp_1', 1000) ->> 'duplicate')::boolean,
    true, 'once'
);
select tests.assert_eq(
    (select cb.balance from public.call_balance as cb where cb.user_id = current_setting('t.user')::uuid),
    45.50, '$35.50 + $10 restored'
);
-- Won before it was ever lost (events out of order): nothing is taken.
select billing.restore_dispute('pi_d', 'dp_2', 700);
select billing.reverse_dispute('pi_d', 'dp_2', 700);
select billing.credit_topup(current_setting('t.user')::uuid, 700, 'pi_d');
select tests.assert_eq(
    (select cb.balance from public.call_balance as cb where cb.user_id = current_setting('t.user')::uuid),
    52.50, 'a dispute won before it was applied never debits'
);

-- reverse_payment: by the caller's key, may go below zero.
select billing.reverse_payment(current_setting('t.other')::uuid, 1500, 'chargeback-1', 'dispute');
select tests.assert_eq(
    (billing.reverse_payment(current_setting('t.other')::uuid, 1500, 'chargeback-1', 'dispute')
    ->> 'duplicate')::boolean,
    true, 'a reversal key is applied once'
);
select tests.assert_eq(
    (select cb.balance from public.call_balance as cb where cb.user_id = current_setting('t.other')::uuid),
    -15.00, 'a reversal may take the balance below zero: the money has left'
);

-- Bad input changes nothing.
select tests.assert_raises(
    format('select billing.credit_topup(%L, 0, %L)', current_setting('t.user'), 'pi_zero'),
    'PT400', 'zero cents'
);
select tests.assert_raises(
    format('select billing.credit_topup(%L, -100, %L)', current_setting('t.user'), 'pi_neg'),
    'PT400', 'negative cents'
);
select tests.assert_raises(
    format('select billing.credit_topup(%L, 1000001, %L)', current_setting('t.user'), 'pi_big'),
    'PT400', 'more than $10,000 in one operation'
);
select tests.assert_raises(
    format('select billing.credit_topup(%L, null, %L)', current_setting('t.user'), 'pi_null'),
    'PT400', 'null amount'
);
select tests.assert_raises(
    format('select billing.credit_topup(%L, 100, null)', current_setting('t.user')),
    'PT400', 'no payment intent'
);
select tests.assert_raises(
    format('select billing.credit_topup(%L, 100, %L, %L)', current_setting('t.user'), 'pi_r', 'gift'),
    'PT400', 'an unknown reason'
);
select tests.assert_raises(
    format('select billing.credit_topup(%L, 100, %L)', gen_random_uuid(), 'pi_nobody'),
    'PT404', 'an unknown user'
);
select tests.assert_raises(
    'select billing.credit_topup(null, 100, ''pi_null_user'')', 'PT400', 'a null user'
);
select tests.assert_raises(
    format('select billing.reverse_payment(%L, 100, %L, %L)', current_setting('t.user'), 'k', 'oops'),
    'PT400', 'a reversal needs a known reason'
);
select tests.assert_raises(
    'select billing.reverse_refund(''pi_a'', -5)', 'PT400', 'a negative refund'
);
select tests.assert_raises(
    'select billing.record_stripe_event('''', ''x'', null)', 'PT400', 'an empty event id'
);
select tests.assert_eq(
    (select cb.balance from public.call_balance as cb where cb.user_id = current_setting('t.user')::uuid),
    52.50, 'refused operations changed nothing'
);

-- Saved card and customer, for auto-refill.
select billing.set_stripe_customer(current_setting('t.user')::uuid, 'cus_1');
select billing.save_payment_method(current_setting('t.user')::uuid, 'cus_1', 'pm_1');
select tests.assert_eq(
    (select cb.stripe_payment_method_id from public.call_balance as cb
        where cb.user_id = current_setting('t.user')::uuid),
    'pm_1', 'the card is saved'
);

select tests.reset_role();
select tests.assert_eq((select count(*) from monitoring.ledger_drift), 0::bigint, 'no drift');
