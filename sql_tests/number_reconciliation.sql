-- Number reconciliation: stale purchases are found, bad arguments are refused.

select tests.reset_role();
select set_config('t.u', tests.create_user('stale-buyer@example.test', 'starter')::text, true);
select billing.reserve_number(current_setting('t.u')::uuid, null);

select tests.assert_eq(
    (select count(*) from billing.stale_number_purchases(now() + interval '5 minutes', 50)
     where user_id = current_setting('t.u')::uuid),
    0::bigint,
    'a purchase five minutes old is not stale yet'
);
select tests.assert_eq(
    (select count(*) from billing.stale_number_purchases(now() + interval '11 minutes', 50)
     where user_id = current_setting('t.u')::uuid),
    1::bigint,
    'a purchase eleven minutes old is stale'
);
select tests.assert_raises(
    'select * from billing.stale_number_purchases(null, 0)', 'PT400', 'a zero limit is refused'
);
select tests.assert_raises(
    'select * from billing.stale_number_purchases(null, -1)', 'PT400', 'a negative limit is refused'
);
select tests.assert_raises(
    'select * from billing.stale_number_purchases(null, 1000000)', 'PT400', 'a huge limit is refused'
);
select tests.assert_raises(
    $$select * from billing.stale_number_purchases(null, 10, interval '1 second')$$,
    'PT400',
    'a purchase cannot be stale after one second'
);
select tests.assert_eq(
    (select count(*) from billing.unknown_number_sids(null)), 0::bigint, 'no sids, none unknown'
);
select tests.assert_eq(
    (select array_agg(s) from billing.unknown_number_sids(array['PNnever_sold']) as s),
    array['PNnever_sold'],
    'a sid no purchase records is unknown'
);

-- Users and anon cannot call either function.
select tests.authenticate_as(current_setting('t.u')::uuid);
select tests.assert_raises(
    'select * from billing.stale_number_purchases()', '42501', 'a user is refused'
);
select tests.reset_role();
select tests.clear_authentication();
select tests.assert_raises(
    $$select * from billing.unknown_number_sids(array['PN1'])$$, '42501', 'anon is refused'
);
