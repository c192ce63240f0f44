-- Refills that are no longer needed, amounts refused rather than rounded, numbers held in the
-- database, the number named in its charge, renewals on the purchase's day of the month.

select set_config('billing.now', '2027-01-31 10:00:00+00', true);
select set_config('t.user', tests.create_user('refills2@example.test', 'classic')::text, true);
select set_config('t.buyer', tests.create_user('anchor@example.test', 'starter')::text, true);
select set_config('t.other', tests.create_user('other@example.test', 'starter')::text, true);

select tests.authenticate_as_service_role();
select billing.credit_topup(current_setting('t.user')::uuid, 1000, 'pi_r2_first');
select billing.save_payment_method(current_setting('t.user')::uuid, 'cus_r2', 'pm_r2');

-- Sub-cent and infinite settings are refused, and nothing is stored.
select tests.reset_role();
select tests.authenticate_as(current_setting('t.user')::uuid);
select tests.assert_raises(
    'select public.update_auto_refill_settings(true, 49.995, 4.996)', 'PT400',
    '$49.995 is not rounded to $50'
);
select tests.assert_raises(
    'select public.update_auto_refill_settings(true, 50, 10.001)', 'PT400',
    'a threshold of $10.001 is not rounded to $10'
);
select tests.assert_raises(
    'select public.update_auto_refill_settings(true, 50, 4.996)', 'PT400',
    'a threshold of $4.996 is not rounded to $5'
);
select tests.assert_raises(
    $$select public.update_auto_refill_settings(true, 'Infinity', 10)$$, 'PT400',
    'an infinite amount is PT400, not an overflow'
);
select tests.assert_raises(
    $$select public.update_auto_refill_settings(true, 50, '-Infinity')$$, 'PT400',
    'an infinite threshold is PT400'
);
select tests.assert_raises(
    $$select public.update_auto_refill_settings(false, 'NaN')$$, 'PT400', 'NaN is PT400'
);
select tests.assert_raises(
    'select public.update_auto_refill_settings(false, null, 1e30)', 'PT400',
    'an absurd threshold is PT400, not an overflow'
);
select tests.assert_raises(
    'select public.update_auto_refill_settings(false, -50)', 'PT400', 'a negative amount'
);
do $$
begin
    perform public.update_auto_refill_settings(true, 49.995, 4.996);
exception when sqlstate 'PT400' then
    perform tests.assert_true(sqlerrm ~ 'whole cents', 'the sentence says why: ' || sqlerrm);
end
$$;
select tests.reset_role();
select tests.assert_eq(
    (select to_jsonb(cb) - 'updated_at' from public.call_balance as cb
        where cb.user_id = current_setting('t.user')::uuid) #>> '{auto_refill_enabled}',
    'false', 'auto-refill stayed off'
);
select tests.assert_eq(
    (select array[cb.auto_refill_amount, cb.auto_refill_threshold] from public.call_balance as cb
        where cb.user_id = current_setting('t.user')::uuid),
    array[50.00, 10.00]::numeric [], 'amount and threshold unchanged'
);

-- Top-up amounts: NaN, infinite and sub-cent are refused with a sentence.
select tests.authenticate_as(current_setting('t.user')::uuid);
select tests.assert_raises($$select public.prepare_topup('NaN')$$, 'PT400', 'top-up NaN');
select tests.assert_raises($$select public.prepare_topup('Infinity')$$, 'PT400', 'top-up infinite');
select tests.assert_raises('select public.prepare_topup(50.001)', 'PT400', 'top-up sub-cent');
select tests.assert_eq(
    public.prepare_topup(50) ->> 'amountCents', '5000', 'a valid top-up still works'
);

-- A declined attempt left a request waiting; a top-up to $110 cancels it.
select public.update_auto_refill_settings(true, 50, 20);
select tests.reset_role();
select tests.authenticate_as_service_role();
select billing.settle_call('CA-r2-1', current_setting('t.user')::uuid, 60);
select set_config('t.req', (select r.id::text from billing.claim_refills(10) as r
    where r.user_id = current_setting('t.user')::uuid), true);
select billing.fail_refill(current_setting('t.req')::uuid, 'card_declined');
select tests.assert_eq(
    (select r.status from public.refill_requests as r where r.id = current_setting('t.req')::uuid),
    'pending', 'the declined request waits for its next attempt'
);
select billing.credit_topup(current_setting('t.user')::uuid, 500, 'pi_r2_small');
select tests.assert_eq(
    (select r.status from public.refill_requests as r where r.id = current_setting('t.req')::uuid),
    'pending', 'a credit that leaves the balance below $20 keeps the request ($14.90)'
);
select billing.credit_topup(current_setting('t.user')::uuid, 9510, 'pi_r2_big');
select tests.assert_eq(
    (select r.status from public.refill_requests as r where r.id = current_setting('t.req')::uuid),
    'cancelled', 'a top-up to $110 cancels the waiting request'
);
select set_config('billing.now', '2027-01-31 10:30:00+00', true);
select tests.assert_eq(
    (select count(*) from billing.claim_refills(10) as r
        where r.user_id = current_setting('t.user')::uuid),
    0::bigint, 'nothing is handed to the charger'
);

-- Claimed while the account is at or above its threshold: cancelled, not handed out.
select billing.settle_call('CA-r2-2', current_setting('t.user')::uuid, 60 * 960);
select tests.assert_eq(
    (select cb.balance from public.call_balance as cb
        where cb.user_id = current_setting('t.user')::uuid),
    14.00, '$110 − 96 minutes at $0.10'
);
select set_config('t.req2', (select r.id::text from public.refill_requests as r
    where r.user_id = current_setting('t.user')::uuid and r.status = 'pending'), true);
select tests.reset_role();
select tests.authenticate_as(current_setting('t.user')::uuid);
select public.update_auto_refill_settings(true, 50, 10);
select tests.reset_role();
select tests.authenticate_as_service_role();
select tests.assert_eq(
    (select count(*) from billing.claim_refills(10) as r
        where r.user_id = current_setting('t.user')::uuid),
    0::bigint, 'a request of an account above its new $10 threshold is not handed out'
);
select tests.assert_eq(
    (select r.status from public.refill_requests as r where r.id = current_setting('t.req2')::uuid),
    'cancelled', 'and it is cancelled'
);

-- Numbers the database holds are not candidates.
select tests.reset_role();
select billing.reserve_number(current_setting('t.other')::uuid, '+14155550100');
select tests.authenticate_as_service_role();
select tests.assert_eq(
    billing.numbers_not_held(array['+14155550100', '+14155550101', '+14155550102',
        '+14155550101']),
    array['+14155550101', '+14155550102'],
    'the held number is left out; order kept; duplicates once'
);
select tests.assert_eq(billing.numbers_not_held('{}'), '{}'::text [], 'no candidates');
select tests.assert_raises(
    $$select billing.numbers_not_held(array['4155550100'])$$, 'PT400', 'a malformed candidate'
);
select tests.assert_raises('select billing.numbers_not_held(null)', 'PT400', 'null candidates');
select tests.assert_raises(
    $$select billing.numbers_not_held(array_fill('+14155550100'::text, array[51]))$$,
    'PT400', 'too many candidates'
);
select tests.reset_role();
select tests.authenticate_as(current_setting('t.other')::uuid);
select tests.assert_raises(
    $$select billing.numbers_not_held(array['+14155550101'])$$, '42501', 'a user is refused'
);
select tests.reset_role();
select tests.clear_authentication();
select tests.assert_raises(
    $$select billing.numbers_not_held(array['+14155550101'])$$, '42501', 'anon is refused'
);

-- What the next number costs, readable before the provider is searched; nothing changes.
select tests.reset_role();
select set_config('t.classic', tests.create_user('classic-n@example.test', 'classic')::text, true);
select tests.authenticate_as_service_role();
select tests.assert_eq(
    billing.check_number_purchase(current_setting('t.buyer')::uuid),
    '{"isFree": true, "price": 0}'::jsonb, 'the first number is free'
);
select tests.assert_raises(
    format('select billing.check_number_purchase(%L)', current_setting('t.classic')),
    'PT403', 'the classic plan sells no numbers'
);
select tests.assert_raises(
    format('select billing.check_number_purchase(%L)', gen_random_uuid()), 'PT404',
    'an unknown user'
);
select tests.assert_raises(
    'select billing.check_number_purchase(null)', 'PT400', 'the user is required'
);
select tests.reset_role();
select tests.authenticate_as(current_setting('t.buyer')::uuid);
select tests.assert_raises(
    format('select billing.check_number_purchase(%L)', current_setting('t.buyer')),
    '42501', 'a user cannot call it'
);
select tests.reset_role();
select tests.authenticate_as_service_role();

-- A paid number's charge names it; an unnamed paid number is refused before any charge.
select tests.reset_role();
select tests.authenticate_as_service_role();
select billing.credit_topup(current_setting('t.buyer')::uuid, 2000, 'pi_anchor');
select tests.reset_role();
update public.call_balance set has_claimed_free_number = true
where user_id = current_setting('t.buyer')::uuid;
select tests.authenticate_as_service_role();
select tests.assert_raises(
    format('select billing.reserve_number(%L, null)', current_setting('t.buyer')),
    'PT400', 'a paid number is named before it is charged'
);
select tests.assert_eq(
    billing.check_number_purchase(current_setting('t.buyer')::uuid),
    '{"isFree": false, "price": 2.00}'::jsonb, 'the next number costs $2'
);
select tests.assert_eq(
    (select count(*) from public.balance_transactions as bt
        where bt.user_id = current_setting('t.buyer')::uuid),
    1::bigint, 'nothing was charged'
);
select set_config('t.anchor', billing.reserve_number(
    current_setting('t.buyer')::uuid, '+14155550177') ->> 'purchaseId', true);
select tests.assert_eq(
    (select array[bt.description, bt.metadata ->> 'phone_number']
        from public.balance_transactions as bt
        where bt.user_id = current_setting('t.buyer')::uuid and bt.reason = 'number_purchase'),
    array['Phone number +14155550177, first month', '+14155550177'],
    'the ledger row and its metadata name the number'
);

-- Bought on Jan 31: renewed Feb 28, then Mar 31, Apr 30 — never drifting to the 28th.
select tests.assert_eq(
    billing.confirm_number(current_setting('t.anchor')::uuid, 'PN-anchor') ->> 'nextRenewalAt',
    to_jsonb('2027-02-28 10:30:00+00'::timestamptz) #>> '{}', 'first renewal: Feb 28'
);
select billing.renew_numbers('2027-02-28 10:30:00+00');
select tests.assert_eq(
    (select n.next_renewal_at from public.user_phone_numbers as n
        where n.id = current_setting('t.anchor')::uuid),
    '2027-03-31 10:30:00+00'::timestamptz, 'then Mar 31'
);
select billing.renew_numbers('2027-03-31 10:30:00+00');
select tests.assert_eq(
    (select n.next_renewal_at from public.user_phone_numbers as n
        where n.id = current_setting('t.anchor')::uuid),
    '2027-04-30 10:30:00+00'::timestamptz, 'then Apr 30'
);
select billing.renew_numbers('2027-04-30 10:30:00+00');
select tests.assert_eq(
    (select n.next_renewal_at from public.user_phone_numbers as n
        where n.id = current_setting('t.anchor')::uuid),
    '2027-05-31 10:30:00+00'::timestamptz, 'then May 31'
);
select tests.assert_eq(
    (select array_agg(bt.amount order by bt.created_at, bt.id) from public.balance_transactions as bt
        where bt.user_id = current_setting('t.buyer')::uuid and bt.reason = 'number_renewal'),
    array[-2.00, -2.00, -2.00]::numeric [], 'three renewals, $2 each'
);
select tests.reset_role();
select tests.assert_eq(
    billing._next_renewal('2028-01-31 10:00:00+00', 31::smallint),
    '2028-02-29 10:00:00+00'::timestamptz, 'a leap February ends on the 29th'
);
select tests.assert_eq(
    billing._next_renewal('2027-03-15 23:30:00+00', 15::smallint),
    '2027-04-15 23:30:00+00'::timestamptz, 'mid-month stays on the day and time'
);
