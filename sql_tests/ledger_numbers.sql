-- Numbers: reserve → confirm or cancel, renewals, past due, release.

select set_config('billing.now', '2026-11-05 10:00:00+00', true);
select set_config('t.user', tests.create_user('numbers@example.test')::text, true);
select set_config('t.classic', tests.create_user('nonumbers@example.test', 'classic')::text, true);
select tests.authenticate_as_service_role();

-- Input is checked.
select tests.assert_raises(
    format('select billing.reserve_number(%L, %L)', current_setting('t.user'), '4155550100'),
    'PT400', 'a number without + is not E.164'
);
select tests.assert_raises(
    format('select billing.reserve_number(%L, %L)', current_setting('t.user'), '+0155550100'),
    'PT400', 'E.164 does not start with 0'
);
select tests.assert_raises(
    format('select billing.reserve_number(%L, %L)', current_setting('t.user'), '+1415555010012345'),
    'PT400', 'more than 15 digits'
);
select tests.assert_raises(
    format('select billing.reserve_number(%L, %L)', current_setting('t.user'), '+1 415 555 0100'),
    'PT400', 'spaces are not E.164'
);
select tests.assert_raises(
    format('select billing.reserve_number(%L, %L)', gen_random_uuid(), '+14155550100'),
    'PT404', 'an unknown user'
);
select tests.assert_raises(
    format('select billing.reserve_number(%L, %L)', current_setting('t.classic'), '+14155550100'),
    'PT403', 'the classic plan sells no numbers'
);

-- The free number, reserved by area code (no number yet), then cancelled: the claim returns.
select set_config(
    't.n1', billing.reserve_number(current_setting('t.user')::uuid, null) ->> 'purchaseId', true
);
select tests.assert_eq(
    (select cb.has_claimed_free_number from public.call_balance as cb
        where cb.user_id = current_setting('t.user')::uuid),
    true, 'the free number is claimed at reservation'
);
select billing.cancel_number(current_setting('t.n1')::uuid, 'provider had no number');
select tests.assert_eq(
    (billing.cancel_number(current_setting('t.n1')::uuid, 'again') ->> 'duplicate')::boolean,
    true, 'cancelling twice is harmless'
);
select tests.assert_eq(
    (select cb.has_claimed_free_number from public.call_balance as cb
        where cb.user_id = current_setting('t.user')::uuid),
    false, 'cancelling gives the free claim back'
);
select tests.assert_raises(
    format('select billing.confirm_number(%L, %L)', current_setting('t.n1'), 'PN1'),
    'PT409', 'a cancelled purchase cannot be confirmed'
);

-- Free again, confirmed with the number the provider bought.
select set_config(
    't.n2', billing.reserve_number(current_setting('t.user')::uuid, null) ->> 'purchaseId', true
);
select tests.assert_raises(
    format('select billing.confirm_number(%L, %L)', current_setting('t.n2'), 'PN2'),
    'PT400', 'confirming a number reserved by area code needs the number'
);
select tests.assert_eq(
    billing.confirm_number(current_setting('t.n2')::uuid, 'PN2', '+14155550102')
    ->> 'nextRenewalAt',
    to_jsonb('2026-12-05 10:00:00+00'::timestamptz) #>> '{}',
    'active, renewing one month later'
);
select tests.assert_eq(
    billing.number_owner('+14155550102'), current_setting('t.user')::uuid, 'the owner of a number'
);
select tests.assert_eq(billing.number_owner('+14155550199'), null::uuid, 'nobody owns this one');
select tests.assert_raises(
    format('select billing.reserve_number(%L, %L)', current_setting('t.user'), '+14155550102'),
    'PT409', 'a number has one live owner'
);

-- A paid number: charged at reservation, given back on cancel.
select billing.credit_topup(current_setting('t.user')::uuid, 1000, 'pi_numbers');
select set_config(
    't.n3',
    billing.reserve_number(current_setting('t.user')::uuid, '+14155550103') ->> 'purchaseId',
    true
);
select tests.assert_eq(
    (select cb.balance from public.call_balance as cb where cb.user_id = current_setting('t.user')::uuid),
    8.00, 'the second number costs $2 at once'
);
select billing.cancel_number(current_setting('t.n3')::uuid, 'provider error');
select tests.assert_eq(
    (select cb.balance from public.call_balance as cb where cb.user_id = current_setting('t.user')::uuid),
    10.00, 'cancelling gives the $2 back'
);
select set_config(
    't.n4',
    billing.reserve_number(current_setting('t.user')::uuid, '+14155550104') ->> 'purchaseId',
    true
);
select billing.confirm_number(current_setting('t.n4')::uuid, 'PN4', null);
select tests.assert_eq(
    (billing.confirm_number(current_setting('t.n4')::uuid, 'PN4', null) ->> 'status'),
    'active', 'confirming twice returns the same number'
);
select tests.assert_raises(
    format('select billing.cancel_number(%L, %L)', current_setting('t.n4'), 'too late'),
    'PT409', 'an active number is released, not cancelled'
);

-- Renewal: due numbers are charged once per period; the free one costs nothing.
select tests.assert_eq(
    billing.renew_numbers('2026-12-01 00:00:00+00'),
    '{"renewed": 0, "pastDue": 0, "markedForRelease": 0}'::jsonb, 'nothing due yet'
);
select tests.assert_eq(
    billing.renew_numbers('2026-12-06 00:00:00+00'),
    '{"renewed": 2, "pastDue": 0, "markedForRelease": 0}'::jsonb, 'both numbers renew'
);
select tests.assert_eq(
    billing.renew_numbers('2026-12-06 00:00:00+00'),
    '{"renewed": 0, "pastDue": 0, "markedForRelease": 0}'::jsonb, 'and only once per period'
);
select tests.assert_eq(
    (select cb.balance from public.call_balance as cb where cb.user_id = current_setting('t.user')::uuid),
    6.00, '$8 - one $2 renewal (the free number renews free)'
);

-- Short of funds: past due with an alert; a top-up lets the next run renew.
select billing.reverse_payment(current_setting('t.user')::uuid, 500, 'adj-1', 'refund');
select tests.assert_eq(
    billing.renew_numbers('2027-01-06 00:00:00+00'),
    '{"renewed": 1, "pastDue": 1, "markedForRelease": 0}'::jsonb,
    'with $1 the paid number goes past due (the free one renews)'
);
select tests.assert_eq(
    (select n.status from public.user_phone_numbers as n where n.id = current_setting('t.n4')::uuid),
    'past_due', 'past due'
);
select tests.assert_eq(
    (select count(*) from public.billing_alerts as a
        where a.user_id = current_setting('t.user')::uuid and a.type = 'number_past_due'),
    1::bigint, 'the owner is told'
);
select tests.assert_eq(
    billing.number_owner('+14155550104'), current_setting('t.user')::uuid,
    'a past-due number still rings through during the grace period'
);
select billing.credit_topup(current_setting('t.user')::uuid, 500, 'pi_numbers_2');
select tests.assert_eq(
    billing.renew_numbers('2027-01-08 00:00:00+00'),
    '{"renewed": 1, "pastDue": 0, "markedForRelease": 0}'::jsonb, 'a top-up while past due renews'
);
select tests.assert_eq(
    (select n.status from public.user_phone_numbers as n where n.id = current_setting('t.n4')::uuid),
    'active', 'active again'
);

-- Past due beyond 7 days: marked for release, handed to one worker, released.
select billing.reverse_payment(current_setting('t.user')::uuid, 400, 'adj-2', 'refund');
select billing.renew_numbers('2027-02-06 00:00:00+00');
select tests.assert_eq(
    billing.renew_numbers('2027-02-10 00:00:00+00'),
    '{"renewed": 0, "pastDue": 0, "markedForRelease": 0}'::jsonb, 'still in the grace period'
);
select tests.assert_eq(
    billing.renew_numbers('2027-02-14 00:00:00+00'),
    '{"renewed": 0, "pastDue": 0, "markedForRelease": 1}'::jsonb, 'past the grace period'
);
select tests.assert_eq(
    (select count(*) from billing.numbers_to_release(10)), 1::bigint, 'one number to release'
);
select tests.assert_eq(
    (select count(*) from billing.numbers_to_release(10)), 0::bigint, 'handed out once'
);
select billing.mark_number_released(current_setting('t.n4')::uuid);
select tests.assert_eq(
    billing.number_owner('+14155550104'), null::uuid, 'a released number has no owner'
);
select tests.assert_eq(
    (select count(*) from public.balance_transactions as bt
        where bt.user_id = current_setting('t.user')::uuid and bt.reason = 'number_renewal'),
    2::bigint, 'two renewals were charged in all'
);

select tests.reset_role();
select tests.assert_eq((select count(*) from monitoring.ledger_drift), 0::bigint, 'no drift');
