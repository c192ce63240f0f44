-- Calls: holds bound what concurrent calls may spend; settlement bills the real duration.

select set_config('billing.now', '2026-11-20 15:00:00+00', true);
select set_config('t.classic', tests.create_user('caller@example.test', 'classic')::text, true);
select set_config('t.starter', tests.create_user('starter-caller@example.test')::text, true);
select set_config('t.rich', tests.create_user('rich@example.test', 'classic')::text, true);
select tests.authenticate_as_service_role();

-- $1.00 on classic: the first call holds it all (10 minutes); a second call has nothing left.
select billing.credit_topup(current_setting('t.classic')::uuid, 100, 'pi_call_1');
select tests.assert_eq(
    billing.authorize_call('CA-h1', current_setting('t.classic')::uuid) - 'holdId',
    '{"allowed": true, "maxSeconds": 600, "reason": null, "minRequired": 0.10,
      "callerId": null, "duplicate": false}'::jsonb,
    '$1.00 at $0.10/min: 600 seconds'
);
select tests.assert_eq(
    (billing.authorize_call('CA-h1', current_setting('t.classic')::uuid) ->> 'maxSeconds')::integer,
    600, 'the same call sid gets the same hold'
);
select tests.assert_eq(
    (select count(*) from public.call_holds as h where h.call_sid = 'CA-h1'), 1::bigint, 'one hold'
);
select tests.assert_eq(
    billing.authorize_call('CA-h2', current_setting('t.classic')::uuid) ->> 'reason',
    'insufficient_balance', 'a concurrent call sees the first call''s hold'
);

-- Settlement releases the hold; what is left can be held again.
select billing.settle_call('CA-h1', null, 150);
select tests.assert_eq(
    (select cb.balance from public.call_balance as cb
        where cb.user_id = current_setting('t.classic')::uuid),
    0.70, '2 min 30 s = 3 minutes = $0.30, found by the hold when no user is given'
);
select tests.assert_eq(
    (billing.authorize_call('CA-h3', current_setting('t.classic')::uuid) ->> 'maxSeconds')::integer,
    420, 'the released funds can be held again: 7 minutes'
);
-- A call reported longer than its hold is billed for what the hold covered.
select tests.assert_eq(
    (billing.settle_call('CA-h3', current_setting('t.classic')::uuid, 480) ->> 'balance')::numeric,
    0.00, '7 minutes billed although 8 were reported'
);
select tests.assert_eq(
    (select l.unbilled_seconds from public.twilio_call_logs as l where l.call_sid = 'CA-h3'),
    60, 'the minute beyond the authorization is recorded, not billed'
);
select tests.assert_eq(
    billing.authorize_call('CA-after', current_setting('t.classic')::uuid) ->> 'allowed',
    'false', 'no call on an empty balance'
);
select tests.assert_eq(
    (billing.authorize_call('CA-h3', current_setting('t.classic')::uuid) ->> 'reason'),
    'call_already_ended', 'a webhook replay after the call ended does not hold again'
);

-- Classic's "balance > $0": a call must be able to pay its first minute.
select billing.credit_topup(current_setting('t.classic')::uuid, 5, 'pi_call_2');
select tests.reset_role();
select tests.authenticate_as(current_setting('t.classic')::uuid);
select tests.assert_eq(
    public.billing_me() -> 'canCall',
    '{"allowed": false, "reason": "insufficient_balance", "minRequired": 0.10}'::jsonb,
    '$0.05 cannot pay a minute'
);
select tests.assert_raises('select public.check_can_call()', 'PT402', 'check_can_call says 402');
select tests.reset_role();
select tests.authenticate_as_service_role();

-- The 14400-second ceiling.
select billing.credit_topup(current_setting('t.rich')::uuid, 5000, 'pi_rich');
select tests.assert_eq(
    (billing.authorize_call('CA-long', current_setting('t.rich')::uuid) ->> 'maxSeconds')::integer,
    14400, '$50 buys 500 minutes, but one call lasts at most 4 hours'
);
select tests.assert_eq(
    (select h.held_amount from public.call_holds as h where h.call_sid = 'CA-long'),
    24.00, 'and holds only what 240 minutes cost'
);

-- Starter: no call without an active number; free minutes are held too.
select tests.assert_eq(
    billing.authorize_call('CA-s0', current_setting('t.starter')::uuid) ->> 'reason',
    'no_active_number', 'starter calls need a number'
);
select tests.reset_role();
select tests.authenticate_as(current_setting('t.starter')::uuid);
select tests.assert_raises('select public.check_can_call()', 'PT403', 'check_can_call says 403');
select tests.reset_role();
select tests.authenticate_as_service_role();
select billing.confirm_number(
    (billing.reserve_number(current_setting('t.starter')::uuid, '+14155550142') ->> 'purchaseId')::uuid,
    'PN42', null
);
select tests.assert_eq(
    billing.authorize_call('CA-s1', current_setting('t.starter')::uuid) - 'holdId',
    '{"allowed": true, "maxSeconds": 12000, "reason": null, "minRequired": 5.00,
      "callerId": "+14155550142", "duplicate": false}'::jsonb,
    '200 free minutes, no balance: 12000 seconds, calling from the user''s number'
);
select tests.assert_eq(
    billing.authorize_call('CA-s2', current_setting('t.starter')::uuid) ->> 'reason',
    'insufficient_balance', 'the free minutes are all held by the first call'
);
select tests.reset_role();
select tests.authenticate_as(current_setting('t.starter')::uuid);
select tests.assert_raises(
    'select public.check_can_call()', 'PT402', 'held free minutes are not available'
);
select tests.reset_role();
select tests.authenticate_as_service_role();

-- A hold whose callback never comes: overdue, then released; a late callback still bills.
select tests.assert_eq(
    (select count(*) from billing.stale_holds('2026-11-20 18:25:00+00')), 1::bigint,
    'the starter call is overdue after its 200 minutes and a margin'
);
select tests.assert_eq(
    billing.release_expired_holds('2026-11-20 18:40:00+00'), 1,
    'and released 15 minutes after its limit'
);
select tests.assert_eq(
    billing.release_expired_holds('2026-11-20 18:40:00+00'), 0, 'once'
);
select tests.assert_eq(
    (billing.settle_call('CA-s1', null, 65) ->> 'freeMinutesUsed')::integer,
    2, 'a late callback still settles the call'
);
select tests.assert_eq(
    (select count(*) from monitoring.expired_holds where settled_later), 1::bigint,
    'monitoring shows the expired hold that was settled later'
);

-- Bad input is refused and changes nothing.
select tests.assert_raises(
    format('select billing.settle_call(%L, %L, -1)', 'CA-bad', current_setting('t.rich')),
    'PT400', 'a negative duration'
);
select tests.assert_raises(
    format('select billing.settle_call(%L, %L, null)', 'CA-bad', current_setting('t.rich')),
    'PT400', 'a null duration'
);
select tests.assert_raises(
    format('select billing.settle_call(%L, %L, 86401)', 'CA-bad', current_setting('t.rich')),
    'PT400', 'more than a day'
);
select tests.assert_raises(
    format('select billing.settle_call(%L, %L, 60)', '', current_setting('t.rich')),
    'PT400', 'an empty call sid'
);
select tests.assert_raises(
    'select billing.settle_call(''CA-nobody'', null, 60)', 'PT404', 'no hold and no user'
);
select tests.assert_raises(
    format('select billing.settle_call(%L, %L, 60)', 'CA-long', current_setting('t.classic')),
    'PT409', 'a call held for one account cannot be settled on another'
);
select tests.assert_raises(
    'select billing.authorize_call(''CA-x'', null)', 'PT400', 'authorize needs a user'
);
select tests.assert_raises(
    format('select billing.authorize_call(%L, %L)', 'CA-x', gen_random_uuid()),
    'PT404', 'an unknown user'
);

select tests.reset_role();
select tests.assert_eq((select count(*) from monitoring.ledger_drift), 0::bigint, 'no drift');
