-- What a signed-in user sees and may do: billing_me, prepare_topup.

select set_config('billing.now', '2026-11-20 12:00:00+00', true);
select set_config('t.starter', tests.create_user('me@example.test')::text, true);
select set_config('t.classic', tests.create_user('me-classic@example.test', 'classic')::text, true);

-- A user with no account row yet reads the account its creation will store.
select tests.reset_role();
delete from public.call_balance where user_id = current_setting('t.starter')::uuid;
select tests.authenticate_as(current_setting('t.starter')::uuid);
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
    'the billing state of a new starter account, before it is stored'
);

-- Status: LOW below the threshold, OK up to $50, GOOD from $50.
select tests.reset_role();
select tests.authenticate_as_service_role();
select billing.credit_topup(current_setting('t.classic')::uuid, 1000, 'pi_me_1');
select tests.reset_role();
select tests.authenticate_as(current_setting('t.classic')::uuid);
select tests.assert_eq(public.billing_me() ->> 'status', 'OK', '$10 is OK');
select tests.assert_eq(
    (public.billing_me() ->> 'estimatedMinutes')::integer, 100, '$10 at $0.10: 100 minutes'
);
select tests.assert_eq(
    public.billing_me() -> 'canCall',
    '{"allowed": true, "reason": null, "minRequired": 0.10}'::jsonb,
    'a classic user with money may call, no number needed'
);

-- Top-ups: the plan's presets, or a custom amount where the plan allows one.
select tests.assert_eq(
    public.prepare_topup(50) - 'userId' - 'stripeCustomerId',
    '{"amount": 50.00, "amountCents": 5000, "currency": "usd", "email": "me-classic@example.test",
      "plan": "classic"}'::jsonb,
    'classic sells $50'
);
select tests.assert_raises('select public.prepare_topup(25)', 'PT400', 'classic has no custom amount');
select tests.reset_role();
select tests.authenticate_as(current_setting('t.starter')::uuid);
select tests.assert_eq(
    (public.prepare_topup(5) ->> 'amountCents')::bigint, 500::bigint, 'starter preset $5'
);
select tests.assert_eq(
    (public.prepare_topup(12.34) ->> 'amountCents')::bigint, 1234::bigint, 'a custom $12.34'
);
select tests.assert_raises('select public.prepare_topup(4.99)', 'PT400', 'below the $5 minimum');
select tests.assert_raises('select public.prepare_topup(0)', 'PT400', 'zero');
select tests.assert_raises('select public.prepare_topup(-5)', 'PT400', 'negative');
select tests.assert_raises('select public.prepare_topup(null)', 'PT400', 'null');
select tests.assert_raises('select public.prepare_topup(10000.01)', 'PT400', 'over $10,000');
select tests.assert_raises('select public.prepare_topup(5.001)', 'PT400', 'fractions of a cent');
select tests.assert_eq(
    (public.prepare_topup(10000) ->> 'amount')::numeric, 10000.00, '$10,000 is the most'
);

-- Without a signed-in user the public functions refuse.
select tests.reset_role();
select set_config('role', 'authenticated', true);
select set_config('request.jwt.claims', '{"role": "authenticated"}', true);
select tests.assert_raises('select public.billing_me()', 'PT403', 'no user in the token');
select tests.reset_role();
select tests.authenticate_as(gen_random_uuid());
select tests.assert_raises('select public.billing_me()', 'PT404', 'a token for a deleted user');
