-- The seeds' numbers, worked through the billing functions.
--
-- Seed 000 (classic): $0.10 a minute, partial minutes rounded up, $50 ≈ 500 minutes.
-- Seed 003 (starter): $0.02 a minute after 200 free minutes a month, numbers $2/month with
-- the first one free, and a $5 minimum when the free minutes are gone.

-- Arrange: one classic and one starter user, in the middle of November 2026 (UTC).
select set_config('billing.now', '2026-11-15 12:00:00+00', true);
select set_config('t.classic', tests.create_user('classic@example.test', 'classic')::text, true);
select set_config('t.starter', tests.create_user('starter@example.test')::text, true);

select tests.assert_eq(
    (select cb.plan_id from public.call_balance as cb
        where cb.user_id = current_setting('t.starter')::uuid),
    'starter', 'a new account gets the default plan (starter)'
);
select tests.assert_eq(
    (select cb.free_minutes_remaining from public.call_balance as cb
        where cb.user_id = current_setting('t.starter')::uuid),
    200, 'a new starter account starts with its 200 free minutes'
);

select tests.authenticate_as_service_role();

-- Seed 000: "Add $50 (≈500 minutes)".
select billing.credit_topup(current_setting('t.classic')::uuid, 5000, 'pi_classic_50');
select tests.reset_role();
select tests.authenticate_as(current_setting('t.classic')::uuid);
select tests.assert_eq((public.billing_me() ->> 'balance')::numeric, 50.00, '$50 credited');
select tests.assert_eq(
    (public.billing_me() ->> 'estimatedMinutes')::integer, 500, '$50 buys about 500 minutes'
);
select tests.assert_eq(public.billing_me() ->> 'status', 'GOOD', '$50 is GOOD');

-- Seed 000: "5 minutes × $0.10 = $0.50".
select tests.reset_role();
select tests.authenticate_as_service_role();
select tests.assert_eq(
    (billing.settle_call('CA-five-minutes', current_setting('t.classic')::uuid, 300)
    ->> 'billedAmount')::numeric,
    0.50, 'a 5-minute classic call costs $0.50'
);
select tests.assert_eq(
    (select cb.balance from public.call_balance as cb
        where cb.user_id = current_setting('t.classic')::uuid),
    49.50, 'the balance after the 5-minute call'
);

-- "Partial minutes are rounded up": 4 min 1 s is billed as 5 minutes.
select tests.assert_eq(
    billing.settle_call('CA-four-one', current_setting('t.classic')::uuid, 241)
    - 'transactionId' - 'balance',
    '{"billedMinutes": 5, "freeMinutesUsed": 0, "billedAmount": 0.50, "duplicate": false}'::jsonb,
    '4 min 1 s is billed as 5 minutes'
);
select tests.assert_eq(
    (billing.settle_call('CA-exact-minute', current_setting('t.classic')::uuid, 60)
    ->> 'billedMinutes')::integer,
    1, 'exactly 60 s is one minute'
);

-- A 0-second call is free and writes no ledger entry.
select tests.assert_eq(
    (billing.settle_call('CA-zero', current_setting('t.classic')::uuid, 0) ->> 'billedAmount')::numeric,
    0, 'a 0 s call costs nothing'
);
select tests.assert_eq(
    (select count(*) from public.balance_transactions as bt where bt.idempotency_key = 'call:CA-zero'),
    0::bigint, 'a 0 s call writes no ledger entry'
);
select tests.assert_eq(
    (select cb.balance from public.call_balance as cb
        where cb.user_id = current_setting('t.classic')::uuid),
    48.90, '$50 - $0.50 - $0.50 - $0.10'
);

-- Settling the same call twice bills once.
select tests.assert_eq(
    (billing.settle_call('CA-five-minutes', current_setting('t.classic')::uuid, 300)
    ->> 'duplicate')::boolean,
    true, 'a replayed status callback is a duplicate'
);
select tests.assert_eq(
    (select cb.balance from public.call_balance as cb
        where cb.user_id = current_setting('t.classic')::uuid),
    48.90, 'the replay did not bill again'
);

-- Seed 003: the first number is free, even at a $0 balance.
select set_config(
    't.free_number',
    billing.reserve_number(current_setting('t.starter')::uuid, '+14155550100') ->> 'purchaseId',
    true
);
select tests.assert_eq(
    (select n.is_free from public.user_phone_numbers as n
        where n.id = current_setting('t.free_number')::uuid),
    true, 'the first number is free at $0'
);
select billing.confirm_number(current_setting('t.free_number')::uuid, 'PN-free', null);
select tests.assert_eq(
    (select n.status from public.user_phone_numbers as n
        where n.id = current_setting('t.free_number')::uuid),
    'active', 'the free number is active once confirmed'
);

-- Seed 003: the first 200 minutes of the month are free, then $0.02 a minute.
select tests.assert_eq(
    billing.settle_call('CA-starter-1', current_setting('t.starter')::uuid, 150 * 60)
    - 'transactionId' - 'balance',
    '{"billedMinutes": 150, "freeMinutesUsed": 150, "billedAmount": 0, "duplicate": false}'::jsonb,
    '150 minutes come out of the free allowance'
);
select billing.credit_topup(current_setting('t.starter')::uuid, 1000, 'pi_starter_10');
select tests.assert_eq(
    billing.settle_call('CA-starter-2', current_setting('t.starter')::uuid, 56 * 60 + 30)
    - 'transactionId' - 'balance',
    '{"billedMinutes": 57, "freeMinutesUsed": 50, "billedAmount": 0.14, "duplicate": false}'::jsonb,
    'the last 50 free minutes, then 7 paid minutes at $0.02'
);
select tests.assert_eq(
    (select cb.balance from public.call_balance as cb
        where cb.user_id = current_setting('t.starter')::uuid),
    9.86, '$10 - 7 × $0.02'
);

-- Seed 003: a second number with balance < $5 and no free minutes left is refused: 402,
-- minRequired 5, price 2.
select billing.settle_call('CA-starter-3', current_setting('t.starter')::uuid, 245 * 60);
select tests.assert_eq(
    (select cb.balance from public.call_balance as cb
        where cb.user_id = current_setting('t.starter')::uuid),
    4.96, '$9.86 - 245 × $0.02'
);
do $$
declare
    v_detail jsonb;
begin
    perform billing.reserve_number(current_setting('t.starter')::uuid, '+14155550101');
    raise exception 'expected PT402';
exception when sqlstate 'PT402' then
    get stacked diagnostics v_detail = pg_exception_detail;
    perform tests.assert_eq((v_detail ->> 'minRequired')::numeric, 5.00, 'minRequired is $5');
    perform tests.assert_eq((v_detail ->> 'price')::numeric, 2.00, 'the price is $2');
    perform tests.assert_eq((v_detail ->> 'balance')::numeric, 4.96, 'the balance is reported');
end
$$;
select tests.assert_eq(
    (select count(*) from public.user_phone_numbers as n
        where n.user_id = current_setting('t.starter')::uuid),
    1::bigint, 'the refused purchase left nothing behind'
);

-- ... and the starter user may not call either, until a top-up.
select tests.assert_eq(
    (billing.authorize_call('CA-refused', current_setting('t.starter')::uuid) ->> 'allowed')::boolean,
    false, 'no free minutes and < $5: the call is refused'
);
select billing.credit_topup(current_setting('t.starter')::uuid, 500, 'pi_starter_5');
select tests.assert_eq(
    (billing.reserve_number(current_setting('t.starter')::uuid, '+14155550101') ->> 'charged')::numeric,
    2.00, 'with $9.96 the second number is charged $2'
);

-- The monthly reset: on the first touch in December the free minutes are back at 200.
select tests.reset_role();
select set_config('billing.now', '2026-12-01 00:00:05+00', true);
select tests.authenticate_as(current_setting('t.starter')::uuid);
select tests.assert_eq(
    (public.billing_me() ->> 'freeMinutesRemaining')::integer,
    200, 'a new calendar month restores 200 free minutes'
);
select tests.reset_role();
select tests.authenticate_as_service_role();
select tests.assert_eq(
    (billing.settle_call('CA-december', current_setting('t.starter')::uuid, 600) ->> 'freeMinutesUsed')::integer,
    10, 'December calls use the new allowance'
);
select tests.assert_eq(
    (select cb.free_minutes_remaining from public.call_balance as cb
        where cb.user_id = current_setting('t.starter')::uuid),
    190, 'no second reset within the month'
);

-- The ledger adds up for both users.
select tests.reset_role();
select tests.assert_eq(
    (select count(*) from monitoring.ledger_drift), 0::bigint, 'balance = sum(ledger) for everyone'
);
