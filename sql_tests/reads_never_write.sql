-- Reads never write: billing_me and check_can_call answer in a read-only transaction,
-- as PostgREST runs a GET (and a read replica serves it), across a month's rollover
-- and for a user whose account was not created yet. The month's reset is stored by
-- the next money operation.

select set_config('billing.now', '2026-11-20 12:00:00+00', true);
select set_config('t.reader', tests.create_user('reader@example.test')::text, true);
select set_config('t.payer', tests.create_user('payer@example.test')::text, true);
select set_config('t.newcomer', tests.create_user('newcomer@example.test')::text, true);

-- November: two starter users with a number spend all 200 free minutes and have no balance.
select tests.authenticate_as_service_role();
select billing.confirm_number(
    (billing.reserve_number(current_setting('t.reader')::uuid, '+14155550181') ->> 'purchaseId')::uuid,
    'PN-reader', null
);
select billing.confirm_number(
    (billing.reserve_number(current_setting('t.payer')::uuid, '+14155550182') ->> 'purchaseId')::uuid,
    'PN-payer', null
);
select billing.authorize_call('CA-ro-reader', current_setting('t.reader')::uuid);
select billing.settle_call('CA-ro-reader', current_setting('t.reader')::uuid, 200 * 60);
select billing.authorize_call('CA-ro-payer', current_setting('t.payer')::uuid);
select billing.settle_call('CA-ro-payer', current_setting('t.payer')::uuid, 200 * 60);
select tests.reset_role();
select tests.authenticate_as(current_setting('t.reader')::uuid);
select tests.assert_eq(
    (public.billing_me() ->> 'freeMinutesRemaining')::integer, 0, 'November: all used'
);
select tests.assert_raises('select public.check_can_call()', 'PT402', 'November: no call');

-- The newcomer's account row does not exist yet (as for a user created before the trigger).
select tests.reset_role();
delete from public.call_balance where user_id = current_setting('t.newcomer')::uuid;

-- What a read shows for a missing account is what account creation then stores.
select set_config(
    't.classic', tests.create_user('newcomer-classic@example.test', 'classic')::text, true
);
delete from public.call_balance where user_id = current_setting('t.classic')::uuid;
select tests.authenticate_as(current_setting('t.classic')::uuid);
select set_config('t.before', public.billing_me()::text, true);
select tests.reset_role();
select billing._ensure_account(current_setting('t.classic')::uuid);
select tests.authenticate_as(current_setting('t.classic')::uuid);
select tests.assert_eq(
    public.billing_me(), current_setting('t.before')::jsonb,
    'a classic newcomer: the read before creation equals the created account'
);
select tests.reset_role();

-- December. The payer's next money operation stores the reset.
select set_config('billing.now', '2026-12-01 00:00:05+00', true);
select tests.authenticate_as_service_role();
select billing.credit_topup(current_setting('t.payer')::uuid, 500, 'pi_ro_payer');
select tests.reset_role();
select tests.assert_eq(
    (select cb.free_minutes_remaining::integer from public.call_balance as cb
        where cb.user_id = current_setting('t.payer')::uuid),
    200, 'a money operation in December stores the new allowance'
);

-- From here the transaction is read-only, as a PostgREST GET is (set transaction read only).
set transaction_read_only = on;
select tests.assert_raises(
    $$select billing.credit_topup(current_setting('t.reader')::uuid, 500, 'pi_ro_reader')$$,
    '25006', 'writing is refused in this transaction'
);

-- The reader sees the new month's allowance, and may call on it.
select tests.authenticate_as(current_setting('t.reader')::uuid);
select tests.assert_eq(
    public.billing_me() - 'lastRefillAt' - 'activeNumbers',
    '{
      "balance": 0.00, "heldAmount": 0, "freeMinutesRemaining": 200,
      "hasClaimedFreeNumber": true, "estimatedMinutes": 200, "status": "LOW",
      "autoRefill": {"enabled": false, "amount": 50.00, "threshold": 10.00, "monthlyCap": 500.00},
      "plan": "starter", "planName": "Starter",
      "pricing": {
        "perMinute": 0.02, "freeMinutesMonthly": 200, "minBalance": 5.00, "numberMonthly": 2.00,
        "freeNumbers": 1, "topUpPresets": [5.00, 10.00], "customTopUpMin": 5.00,
        "autoRefillAmounts": [50.00, 100.00]
      },
      "canCall": {"allowed": true, "reason": null, "minRequired": 5.00},
      "hasPaymentMethod": false
    }'::jsonb,
    'billing_me in December, read-only: the new month''s 200 free minutes'
);
select tests.assert_eq(
    public.check_can_call() - 'callerId',
    '{"allowed": true, "maxSeconds": 12000, "minRequired": 5.00, "balance": 0.00,
      "freeMinutesRemaining": 200}'::jsonb,
    'check_can_call in December, read-only: allowed on the new allowance'
);
select tests.reset_role();
select tests.assert_eq(
    (select pg_catalog.jsonb_build_object(
            'free', cb.free_minutes_remaining, 'reset', cb.free_minutes_last_reset)
        from public.call_balance as cb where cb.user_id = current_setting('t.reader')::uuid),
    pg_catalog.jsonb_build_object('free', 0, 'reset', '2026-11-20 12:00:00+00'::timestamptz),
    'the reads stored nothing: the reset waits for the next money operation'
);

-- A user without an account row reads what account creation would store: the plan its
-- app metadata names, else the default plan (starter), with that plan's defaults.
select tests.authenticate_as(current_setting('t.newcomer')::uuid);
select tests.assert_eq(
    public.billing_me() - 'lastRefillAt',
    '{
      "balance": 0.00, "heldAmount": 0, "freeMinutesRemaining": 200,
      "hasClaimedFreeNumber": false, "estimatedMinutes": 200, "status": "LOW",
      "autoRefill": {"enabled": false, "amount": 50.00, "threshold": 10.00, "monthlyCap": 500.00},
      "plan": "starter", "planName": "Starter",
      "pricing": {
        "perMinute": 0.02, "freeMinutesMonthly": 200, "minBalance": 5.00, "numberMonthly": 2.00,
        "freeNumbers": 1, "topUpPresets": [5.00, 10.00], "customTopUpMin": 5.00,
        "autoRefillAmounts": [50.00, 100.00]
      },
      "canCall": {"allowed": false, "reason": "no_active_number", "minRequired": 5.00},
      "hasPaymentMethod": false, "activeNumbers": []
    }'::jsonb,
    'billing_me without an account row, read-only: the default plan''s new account'
);
select tests.assert_raises('select public.check_can_call()', 'PT403', 'no number yet: 403');
select tests.reset_role();
select tests.assert_eq(
    (select count(*) from public.call_balance as cb
        where cb.user_id = current_setting('t.newcomer')::uuid),
    0::bigint, 'the reads created no account'
);

-- The read-only entry points are declared stable, so PostgREST serves them by GET.
select tests.assert_eq(
    (select pg_catalog.array_agg(p.proname::text order by p.proname)
        from pg_catalog.pg_proc as p
        where p.oid in ('public.billing_me()'::regprocedure, 'public.check_can_call()'::regprocedure)
            and p.provolatile = 's'),
    array['billing_me', 'check_can_call'],
    'billing_me and check_can_call are stable'
);
