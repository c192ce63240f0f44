-- Call legs: one SQL call per Twilio event; what a call may be billed, and in which month.

select set_config('billing.now', '2026-11-20 15:00:00+00', true);
select set_config('t.classic', tests.create_user('legs-classic@example.test', 'classic')::text, true);
select set_config('t.late', tests.create_user('legs-late@example.test', 'classic')::text, true);
select set_config('t.legs', tests.create_user('legs@example.test', 'classic')::text, true);
select set_config('t.starter', tests.create_user('legs-starter@example.test')::text, true);
select set_config('t.p1', 'CA' || md5('parent-1'), true);
select set_config('t.c1', 'CA' || md5('child-1'), true);
select tests.authenticate_as_service_role();

-- $0.50 on classic holds 5 minutes; a callback reporting an hour bills those 5 and no more.
select billing.credit_topup(current_setting('t.classic')::uuid, 50, 'pi_legs_1');
select tests.assert_eq(
    (billing.authorize_call(current_setting('t.p1'), current_setting('t.classic')::uuid)
        ->> 'maxSeconds')::integer,
    300, '$0.50 at $0.10/min: 300 seconds'
);
select tests.assert_eq(
    billing.apply_call_status(jsonb_build_object(
        'CallSid', current_setting('t.c1'), 'ParentCallSid', current_setting('t.p1'),
        'CallStatus', 'completed', 'CallDuration', '3600', 'Direction', 'outbound-dial'
    )) - 'transactionId',
    jsonb_build_object(
        'outcome', 'settled', 'callSid', current_setting('t.p1'), 'billedMinutes', 5,
        'freeMinutesUsed', 0, 'billedAmount', 0.50, 'balance', 0.00, 'duplicate', false
    ),
    'an hour reported, the 5 held minutes billed'
);
select tests.assert_eq(
    (select row(l.duration, l.unbilled_seconds)::text from public.twilio_call_logs as l
        where l.call_sid = current_setting('t.p1')),
    '(300,3300)', 'the seconds beyond the authorization are recorded on the call log'
);
select tests.assert_eq(
    (select a.kind from public.operator_alerts as a
        where a.metadata ->> 'callSid' = current_setting('t.p1')),
    'call_overrun', 'and raised to the operators'
);
select tests.assert_eq(
    (select count(*) from monitoring.operator_alerts as a
        where a.metadata ->> 'callSid' = current_setting('t.p1')),
    1::bigint, 'the monitoring view lists the open alert'
);

-- A callback after its hold expired: the same cap, and never below zero.
select billing.credit_topup(current_setting('t.late')::uuid, 100, 'pi_legs_late');
select billing.authorize_call('CA' || md5('late-a'), current_setting('t.late')::uuid);
select billing.release_expired_holds('infinity');
select billing.authorize_call('CA' || md5('late-b'), current_setting('t.late')::uuid);
select billing.apply_call_status(jsonb_build_object(
    'CallSid', 'CA' || md5('late-b-child'), 'ParentCallSid', 'CA' || md5('late-b'),
    'CallStatus', 'completed', 'CallDuration', '600'
));
select tests.assert_eq(
    (billing.apply_call_status(jsonb_build_object(
        'CallSid', 'CA' || md5('late-a-child'), 'ParentCallSid', 'CA' || md5('late-a'),
        'CallStatus', 'completed', 'CallDuration', '600'
    )) ->> 'billedAmount')::numeric,
    0.00, 'the late call finds nothing left to pay with'
);
select tests.assert_eq(
    (select cb.balance from public.call_balance as cb
        where cb.user_id = current_setting('t.late')::uuid),
    0.00, 'a settlement never takes the balance below zero'
);

-- Legs: the parent's duration (ringing + TwiML + talk) is never billed; the dialed leg's is.
select billing.credit_topup(current_setting('t.legs')::uuid, 1000, 'pi_legs_2');
select billing.authorize_call('CA' || md5('p2'), current_setting('t.legs')::uuid);
select tests.assert_eq(
    billing.apply_call_status(jsonb_build_object(
        'CallSid', 'CA' || md5('p2'), 'CallStatus', 'completed', 'CallDuration', '70',
        'Direction', 'inbound'
    )) ->> 'outcome',
    'parent_ended', 'the parent''s completion first: recorded, nothing billed'
);
select tests.assert_eq(
    (select count(*) from public.twilio_call_logs as l where l.call_sid = 'CA' || md5('p2')),
    0::bigint, 'no settlement from the parent'
);
select tests.assert_eq(
    (billing.apply_call_status(jsonb_build_object(
        'CallSid', 'CA' || md5('c2'), 'ParentCallSid', 'CA' || md5('p2'),
        'CallStatus', 'completed', 'CallDuration', '59'
    )) ->> 'billedMinutes')::integer,
    1, 'the dialed leg''s 59 s: one minute'
);
-- Child first, then the parent: the parent changes nothing.
select billing.authorize_call('CA' || md5('p3'), current_setting('t.legs')::uuid);
select billing.apply_call_status(jsonb_build_object(
    'CallSid', 'CA' || md5('c3'), 'ParentCallSid', 'CA' || md5('p3'),
    'CallStatus', 'completed', 'CallDuration', '59'
));
select billing.apply_call_status(jsonb_build_object(
    'CallSid', 'CA' || md5('p3'), 'CallStatus', 'completed', 'CallDuration', '75'
));
select tests.assert_eq(
    (select cb.balance from public.call_balance as cb
        where cb.user_id = current_setting('t.legs')::uuid),
    9.80, 'two 59-second calls, one minute each, in either order'
);
-- An unanswered dial bills nothing, even when the parent's `completed` comes first.
select billing.authorize_call('CA' || md5('p4'), current_setting('t.legs')::uuid);
select billing.apply_call_status(jsonb_build_object(
    'CallSid', 'CA' || md5('p4'), 'CallStatus', 'completed', 'CallDuration', '31'
));
select tests.assert_eq(
    billing.apply_call_status(jsonb_build_object(
        'CallSid', 'CA' || md5('c4'), 'ParentCallSid', 'CA' || md5('p4'),
        'CallStatus', 'no-answer', 'CallDuration', '0'
    )) ->> 'billedAmount',
    '0.00', 'no answer, no charge'
);
-- The <Dial action> fields (also what reconciliation reports): DialCallDuration is the talk time.
select billing.authorize_call('CA' || md5('p5'), current_setting('t.legs')::uuid);
select tests.assert_eq(
    (billing.apply_call_status(jsonb_build_object(
        'CallSid', 'CA' || md5('p5'), 'CallStatus', 'completed', 'CallDuration', '140',
        'DialCallSid', 'CA' || md5('c5'), 'DialCallStatus', 'completed', 'DialCallDuration', '61'
    )) ->> 'billedMinutes')::integer,
    2, 'DialCallDuration 61 s, not the parent''s 140 s'
);
select tests.assert_eq(
    billing.apply_call_status(jsonb_build_object(
        'CallSid', 'CA' || md5('c6'), 'ParentCallSid', 'CA' || md5('p6'),
        'CallStatus', 'completed', 'CallDuration', '60'
    )) ->> 'outcome',
    'no_hold', 'a callback for a call never authorized settles nothing'
);
select tests.assert_eq(
    billing.apply_call_status(jsonb_build_object(
        'CallSid', 'CA' || md5('c5'), 'ParentCallSid', 'CA' || md5('p5'),
        'CallStatus', 'in-progress'
    )) ->> 'outcome',
    'acknowledged', 'a non-terminal status is acknowledged'
);

-- Bad input: a clear PT400, nothing changed.
select tests.assert_raises(
    'select billing.apply_call_status(''[]'')', 'PT400', 'not an object'
);
select tests.assert_raises(
    'select billing.apply_call_status(''{"CallSid": "CA1", "CallStatus": "completed"}'')',
    'PT400', 'a malformed CallSid'
);
select tests.assert_raises(
    format('select billing.apply_call_status(%L)', jsonb_build_object(
        'CallSid', 'CA' || md5('c7'), 'ParentCallSid', 'CA' || md5('p5'),
        'CallStatus', 'completed', 'CallDuration', '-5')),
    'PT400', 'a negative duration'
);
select tests.assert_raises(
    format('select billing.apply_call_status(%L)', jsonb_build_object(
        'CallSid', 'CA' || md5('c7'), 'ParentCallSid', 'CA' || md5('p5'),
        'CallStatus', 'completed', 'CallDuration', '86401')),
    'PT400', 'more than a day'
);
select tests.assert_raises(
    format('select billing.apply_call_status(%L)', jsonb_build_object(
        'CallSid', 'CA' || md5('c7'), 'ParentCallSid', 'not-a-sid',
        'CallStatus', 'completed', 'CallDuration', '5')),
    'PT400', 'a malformed ParentCallSid'
);
select tests.assert_raises(
    format('select billing.apply_call_status(%L)', jsonb_build_object(
        'CallSid', 'CA' || md5('c7'), 'CallStatus', 'Completed; drop table x')),
    'PT400', 'a malformed status'
);

-- Across midnight on the 1st: the call uses the month it was authorized in.
select set_config('billing.now', '2026-12-31 23:50:00+00', true);
select billing.reserve_number(current_setting('t.starter')::uuid, '+14155550188');
select billing.confirm_number(
    (select n.id from public.user_phone_numbers as n
        where n.user_id = current_setting('t.starter')::uuid),
    'PN' || md5('legs-number')
);
select billing.authorize_call('CA' || md5('nye'), current_setting('t.starter')::uuid);
select set_config('billing.now', '2027-01-01 00:40:00+00', true);
select tests.assert_eq(
    (billing.apply_call_status(jsonb_build_object(
        'CallSid', 'CA' || md5('nye-child'), 'ParentCallSid', 'CA' || md5('nye'),
        'CallStatus', 'completed', 'CallDuration', '3000'
    )) ->> 'freeMinutesUsed')::integer,
    50, 'December''s held free minutes pay the call'
);
select tests.assert_eq(
    (select cb.free_minutes_remaining from public.call_balance as cb
        where cb.user_id = current_setting('t.starter')::uuid),
    200, 'January starts with its full allowance'
);

-- Destinations: North America by default, premium rate refused; configurable by data.
select tests.assert_eq(
    billing.authorize_call('CA' || md5('d1'), current_setting('t.legs')::uuid, '+19005550100')
    ->> 'reason',
    'destination_not_allowed', '+1900 is premium rate'
);
select tests.assert_eq(
    billing.authorize_call('CA' || md5('d2'), current_setting('t.legs')::uuid, '+19765550100')
    ->> 'reason',
    'destination_not_allowed', '+1976 is premium rate'
);
select tests.assert_eq(
    billing.authorize_call('CA' || md5('d3'), current_setting('t.legs')::uuid, '+442071234567')
    ->> 'reason',
    'destination_not_allowed', 'outside North America'
);
select tests.assert_eq(
    billing.authorize_call('CA' || md5('d4'), current_setting('t.legs')::uuid, '555')
    ->> 'reason',
    'invalid_destination', 'not E.164'
);
select tests.assert_eq(
    (select count(*) from public.call_holds as h
        where h.call_sid in ('CA' || md5('d1'), 'CA' || md5('d2'), 'CA' || md5('d3'), 'CA' || md5('d4'))),
    0::bigint, 'refused destinations hold nothing'
);
select tests.reset_role();
update public.billing_plans set allowed_destinations = array['+1', '+44'] where id = 'classic';
select tests.authenticate_as_service_role();
select tests.assert_eq(
    billing.authorize_call('CA' || md5('d5'), current_setting('t.legs')::uuid, '+442071234567')
    ->> 'allowed',
    'true', 'a plan that allows +44 may dial it'
);
select tests.reset_role();
select tests.assert_raises(
    $$update public.billing_plans set blocked_destinations = array['1900'] where id = 'classic'$$,
    '23514', 'prefixes are E.164 prefixes'
);

-- The voice request in one call: strangers hear a neutral sentence, owners hear the minimum.
select set_config('t.poor', tests.create_user('legs-poor@example.test')::text, true);
select tests.authenticate_as_service_role();
select billing.reserve_number(current_setting('t.poor')::uuid, '+14155550189');
select billing.confirm_number(
    (select n.id from public.user_phone_numbers as n
        where n.user_id = current_setting('t.poor')::uuid),
    'PN' || md5('legs-poor-number')
);
select tests.reset_role();
update public.call_balance set free_minutes_remaining = 0
where user_id = current_setting('t.poor')::uuid;
select tests.authenticate_as_service_role();
select tests.assert_eq(
    billing.authorize_voice(jsonb_build_object(
        'CallSid', 'CA' || md5('v1'), 'From', '+12125550199', 'To', '+14155550189'
    ), 'sip:agent@example.test') - 'reason',
    '{"allowed": false, "say": "This number cannot take calls right now."}'::jsonb,
    'an inbound caller learns nothing about the owner''s balance'
);
select tests.assert_eq(
    billing.authorize_voice(jsonb_build_object(
        'CallSid', 'CA' || md5('v2'), 'From', 'client:' || current_setting('t.poor'),
        'To', '+14155550123'
    )) ->> 'say',
    'Your balance is too low to place this call. Please top up. '
    'A balance of at least 5.00 dollars is required.',
    'the owner''s own call names the minimum'
);
select tests.assert_eq(
    billing.authorize_voice(jsonb_build_object(
        'CallSid', 'CA' || md5('v3'), 'From', 'client:' || current_setting('t.legs'),
        'To', '+19005550100'
    )) ->> 'say',
    'Calls to that number are not allowed on your plan.', 'the owner hears why'
);
select tests.assert_eq(
    billing.authorize_voice(jsonb_build_object(
        'CallSid', 'CA' || md5('v4'), 'From', 'client:' || gen_random_uuid(), 'To', '+14155550123'
    )) ->> 'reason',
    'unknown_client', 'an identity that is no user'
);
select billing.credit_topup(current_setting('t.legs')::uuid, 500000, 'pi_legs_3');
select tests.assert_eq(
    billing.authorize_voice(jsonb_build_object(
        'CallSid', 'CA' || md5('v5'), 'From', 'client:' || current_setting('t.legs'),
        'To', '+14155550123'
    )) - 'holdId' - 'minRequired',
    '{"allowed": true, "maxSeconds": 14400, "reason": null, "callerId": null,
      "target": "+14155550123", "say": null, "duplicate": false}'::jsonb,
    'an allowed outbound call: dial To for as long as the hold covers'
);

-- Operator alerts are for the service role only.
select tests.reset_role();
select tests.authenticate_as(current_setting('t.classic')::uuid);
select tests.assert_raises(
    'select * from public.operator_alerts', '42501', 'the owner may not read operator alerts'
);
select tests.reset_role();
select tests.clear_authentication();
select tests.assert_raises(
    'select * from public.operator_alerts', '42501', 'anon may not read operator alerts'
);
select tests.reset_role();
