-- Twilio lifecycles: every open hold is looked up within minutes; numbers by country.

select set_config('billing.now', '2026-12-01 12:00:00+00', true);
select set_config('t.buyer', tests.create_user('country-buyer@example.test')::text, true);
select set_config('t.classic', tests.create_user('country-classic@example.test', 'classic')::text, true);
select set_config('t.caller', tests.create_user('lost-callback@example.test', 'classic')::text, true);

-- Each plan sells numbers in the US and Canada unless its row says otherwise.
select tests.assert_eq(
    (select array_agg(distinct array_to_string(p.number_countries, ',')) from public.billing_plans as p),
    array['US,CA'], 'every plan sells numbers in US and CA by default'
);
select tests.assert_raises(
    $$update public.billing_plans set number_countries = array['gb'] where id = 'starter'$$,
    '23514', 'a country is an upper-case ISO code'
);
select tests.assert_raises(
    $$update public.billing_plans set number_countries = array['USA'] where id = 'starter'$$,
    '23514', 'a country has two letters'
);

-- The country is the plan's to decide, before Twilio is searched; nothing changes.
select tests.authenticate_as_service_role();
select tests.assert_eq(
    billing.check_number_purchase(current_setting('t.buyer')::uuid, 'US'),
    '{"isFree": true, "price": 0}'::jsonb, 'a US number: the first is free'
);
select tests.assert_eq(
    billing.check_number_purchase(current_setting('t.buyer')::uuid, 'CA', '+16045550100'),
    '{"isFree": true, "price": 0}'::jsonb, 'a named Canadian number'
);
select tests.assert_raises(
    format('select billing.check_number_purchase(%L, %L)', current_setting('t.buyer'), 'GB'),
    'PT403', 'GB is not sold on the starter plan'
);
select tests.assert_raises(
    format(
        'select billing.check_number_purchase(%L, %L, %L)',
        current_setting('t.buyer'), 'US', '+442079460123'
    ),
    'PT400', 'a named number must be in the country asked for'
);
select tests.assert_raises(
    format('select billing.check_number_purchase(%L, %L)', current_setting('t.buyer'), 'us'),
    'PT400', 'a lower-case country is malformed'
);
select tests.assert_raises(
    format('select billing.check_number_purchase(%L, null)', current_setting('t.buyer')),
    'PT400', 'the country is required'
);
select tests.assert_raises(
    format(
        'select billing.check_number_purchase(%L, %L, %L)',
        current_setting('t.buyer'), 'US', '4155550100'
    ),
    'PT400', 'a named number is E.164'
);
select tests.assert_raises(
    format('select billing.check_number_purchase(%L, %L)', current_setting('t.classic'), 'US'),
    'PT403', 'the classic plan sells no numbers anywhere'
);
select tests.assert_raises(
    format('select billing.check_number_purchase(%L, %L)', gen_random_uuid(), 'US'),
    'PT404', 'an unknown user'
);
select tests.assert_eq(
    (select has_claimed_free_number from public.call_balance
        where user_id = current_setting('t.buyer')::uuid),
    false, 'checking claimed nothing'
);

-- A plan that sells GB allows it: a data change, not a code change.
select tests.reset_role();
update public.billing_plans set number_countries = array['US', 'CA', 'GB'] where id = 'starter';
select tests.authenticate_as_service_role();
select tests.assert_eq(
    billing.check_number_purchase(current_setting('t.buyer')::uuid, 'GB', '+442079460123'),
    '{"isFree": true, "price": 0}'::jsonb, 'GB once the plan sells it'
);

-- Only the service role may ask.
select tests.reset_role();
select tests.authenticate_as(current_setting('t.buyer')::uuid);
select tests.assert_raises(
    format('select billing.check_number_purchase(%L, %L)', current_setting('t.buyer'), 'US'),
    '42501', 'a user cannot call it'
);
select tests.assert_raises(
    'select * from billing.claim_holds_to_check()', '42501', 'nor claim holds'
);
select tests.reset_role();
select tests.clear_authentication();
select tests.assert_raises(
    format('select billing.check_number_purchase(%L, %L)', current_setting('t.buyer'), 'US'),
    '42501', 'anon is refused'
);
select tests.assert_raises(
    'select * from billing.claim_holds_to_check()', '42501', 'anon cannot claim holds'
);

-- A call whose callbacks were lost (Twilio does not redeliver a 5xx) is looked up in
-- minutes, not when its 100-minute limit runs out; then every two minutes, not every run.
select tests.reset_role();
select tests.authenticate_as_service_role();
select billing.credit_topup(current_setting('t.caller')::uuid, 1000, 'pi_lost_callback');
select set_config('t.lost', 'CA' || md5('lost-callback'), true);
select tests.assert_eq(
    (billing.authorize_call(current_setting('t.lost'), current_setting('t.caller')::uuid)
        ->> 'maxSeconds')::integer,
    6000, '$10 at $0.10/min holds 100 minutes'
);
select tests.assert_eq(
    (select count(*) from billing.claim_holds_to_check('2026-12-01 12:01:00+00')
        where call_sid = current_setting('t.lost')),
    0::bigint, 'a minute old: still ringing, not looked up'
);
select tests.assert_eq(
    (select count(*) from billing.stale_holds('2026-12-01 12:03:00+00')
        where call_sid = current_setting('t.lost')),
    0::bigint, 'not overdue by its limit'
);
select tests.assert_eq(
    (select array_agg(call_sid) from billing.claim_holds_to_check('2026-12-01 12:03:00+00')
        where call_sid = current_setting('t.lost')),
    array[current_setting('t.lost')], 'three minutes old: looked up'
);
select tests.assert_eq(
    (select count(*) from billing.claim_holds_to_check('2026-12-01 12:04:00+00')
        where call_sid = current_setting('t.lost')),
    0::bigint, 'looked up a minute ago: not again yet'
);
select tests.assert_eq(
    (select count(*) from billing.claim_holds_to_check('2026-12-01 12:05:30+00')
        where call_sid = current_setting('t.lost')),
    1::bigint, 'two minutes later: again'
);
select billing.settle_call(current_setting('t.lost'), null, 61);
select tests.assert_eq(
    (select count(*) from billing.claim_holds_to_check('2026-12-01 13:00:00+00')
        where call_sid = current_setting('t.lost')),
    0::bigint, 'a settled call is never looked up'
);
select tests.assert_raises(
    'select * from billing.claim_holds_to_check(null, 0)', 'PT400', 'the limit is 1 to 1000'
);
