-- The operator's tools: balance adjustments and plan changes, each idempotent on its key,
-- recorded in the ledger, and for service_role only.

select set_config('billing.now', '2027-03-10 12:00:00+00', true);
select set_config('t.user', tests.create_user('ops-adjust@example.test', 'classic')::text, true);
select set_config('t.stranger', tests.create_user('ops-stranger@example.test')::text, true);
select tests.authenticate_as_service_role();
select billing.credit_topup(current_setting('t.user')::uuid, 1000, 'pi_ops_first');

/* ------------------------------------------------------------------------
 * Adjustments
 * ------------------------------------------------------------------------ */

-- A goodwill credit: its own reason in the ledger, the reason shown, an alert.
select set_config('t.credit', billing.adjust_balance(
    current_setting('t.user')::uuid, 'credit', 5.25, '  Dropped call on 9 March  ', 'ticket-1'
)::text, true);
select tests.assert_eq(
    current_setting('t.credit')::jsonb - 'transactionId',
    jsonb_build_object(
        'userId', current_setting('t.user'), 'direction', 'credit', 'amount', 5.25,
        'reason', 'Dropped call on 9 March', 'balance', 15.25, 'duplicate', false
    ),
    'the credit answers what it did'
);
select tests.assert_eq(
    (select array[bt.type, bt.reason, bt.amount::text, bt.description]
        from public.balance_transactions as bt
        where bt.id = (current_setting('t.credit')::jsonb ->> 'transactionId')::uuid),
    array['credit', 'adjustment', '5.25', 'Balance adjustment: Dropped call on 9 March'],
    'a credit of reason adjustment, described with the reason'
);
select tests.assert_eq(
    (select a.message from public.billing_alerts as a
        where a.user_id = current_setting('t.user')::uuid and a.type = 'balance_adjusted'),
    '$5.25 was added to your balance: Dropped call on 9 March', 'the customer is told'
);

-- Replayed with the same arguments: the first result, once.
select tests.assert_eq(
    billing.adjust_balance(
        current_setting('t.user')::uuid, 'credit', 5.25, 'Dropped call on 9 March', 'ticket-1'
    ),
    current_setting('t.credit')::jsonb || '{"duplicate": true}',
    'a replay answers the first result'
);
select tests.assert_eq(
    (select count(*) from public.balance_transactions as bt
        where bt.idempotency_key = 'adjustment:ticket-1'),
    1::bigint, 'one entry for the key'
);
select tests.assert_eq(
    (select cb.balance from public.call_balance as cb
        where cb.user_id = current_setting('t.user')::uuid),
    15.25, 'credited once'
);

-- The same key with other arguments is a conflict.
select tests.assert_raises(
    format('select billing.adjust_balance(%L, %L, 5.26, %L, %L)',
        current_setting('t.user'), 'credit', 'Dropped call on 9 March', 'ticket-1'),
    'PT409', 'a replayed key with another amount'
);
select tests.assert_raises(
    format('select billing.adjust_balance(%L, %L, 5.25, %L, %L)',
        current_setting('t.user'), 'debit', 'Dropped call on 9 March', 'ticket-1'),
    'PT409', 'a replayed key with the other direction'
);
select tests.assert_raises(
    format('select billing.adjust_balance(%L, %L, 5.25, %L, %L)',
        current_setting('t.user'), 'credit', 'Another reason', 'ticket-1'),
    'PT409', 'a replayed key with another reason'
);
select tests.assert_raises(
    format('select billing.adjust_balance(%L, %L, 5.25, %L, %L)',
        current_setting('t.stranger'), 'credit', 'Dropped call on 9 March', 'ticket-1'),
    'PT409', 'a replayed key for another account'
);

-- A correction debit.
select set_config('t.debit', billing.adjust_balance(
    current_setting('t.user')::uuid, 'debit', 3, 'Duplicate credit on 8 March', 'ticket-2'
)::text, true);
select tests.assert_eq(
    (current_setting('t.debit')::jsonb ->> 'balance')::numeric, 12.25, 'debited'
);
select tests.assert_eq(
    (select array[bt.type, bt.reason, bt.amount::text, bt.balance_after::text]
        from public.balance_transactions as bt
        where bt.id = (current_setting('t.debit')::jsonb ->> 'transactionId')::uuid),
    array['debit', 'adjustment', '-3.00', '12.25'], 'a debit of reason adjustment'
);
select tests.assert_eq(
    (select a.message from public.billing_alerts as a
        where
            a.user_id = current_setting('t.user')::uuid and a.type = 'balance_adjusted'
            and a.metadata ->> 'direction' = 'debit'),
    '$3.00 was removed from your balance: Duplicate credit on 8 March', 'told of the debit'
);

-- A debit never takes the balance below zero: refused with the balance in the details.
select tests.assert_raises(
    format('select billing.adjust_balance(%L, %L, 12.26, %L, %L)',
        current_setting('t.user'), 'debit', 'Too much', 'ticket-3'),
    'PT409', 'a debit past zero is refused'
);
do $$
begin
    perform billing.adjust_balance(
        current_setting('t.user')::uuid, 'debit', 12.26, 'Too much', 'ticket-3'
    );
exception when sqlstate 'PT409' then
    declare
        v_detail text;
    begin
        get stacked diagnostics v_detail = pg_exception_detail;
        perform tests.assert_true(sqlerrm ~ 'below zero: the balance is \$12\.25',
            'the sentence names the balance: ' || sqlerrm);
        perform tests.assert_eq((v_detail::jsonb ->> 'balance')::numeric, 12.25,
            'the details carry the balance');
    end;
end
$$;
-- Down to exactly zero is allowed.
select tests.assert_eq(
    (billing.adjust_balance(
        current_setting('t.user')::uuid, 'debit', 12.25, 'Closing the account', 'ticket-4'
    ) ->> 'balance')::numeric,
    0.00, 'a debit to exactly zero'
);
select billing.adjust_balance(current_setting('t.user')::uuid, 'credit', 2, 'Sorry', 'ticket-5');

-- Funds held by a call in progress are not available to a debit.
select billing.authorize_call('CA-ops-held', current_setting('t.user')::uuid);
select tests.assert_eq(
    (select h.held_amount from public.call_holds as h where h.call_sid = 'CA-ops-held'),
    2.00, 'the call holds the whole balance'
);
select tests.assert_raises(
    format('select billing.adjust_balance(%L, %L, 0.01, %L, %L)',
        current_setting('t.user'), 'debit', 'Held funds', 'ticket-6'),
    'PT409', 'held funds cannot be debited'
);
select billing.settle_call('CA-ops-held', current_setting('t.user')::uuid, 0);

-- Bad input is PT400 (or PT404 for a user who does not exist); nothing is written.
select tests.assert_raises(
    format('select billing.adjust_balance(%L, %L, %s, %L, %L)',
        current_setting('t.user'), 'credit', bad.amount, 'Bad amount', 'ticket-bad'),
    'PT400', 'refused amount ' || bad.amount
)
from (
    values ('0'), ('-1'), ('0.001'), ('5.005'), ('10000.01'), ('1e30'), ('null'),
    ('''NaN''::numeric'), ('''Infinity''::numeric'), ('''-Infinity''::numeric')
) as bad (amount);
select tests.assert_raises(
    format('select billing.adjust_balance(%L, %L, -1, %L, %L)',
        current_setting('t.user'), 'debit', 'Negative', 'ticket-neg'),
    'PT400', 'a negative debit: the direction gives the sign'
);
select tests.assert_raises(
    format('select billing.adjust_balance(%L, %s, 1, %L, %L)',
        current_setting('t.user'), bad.direction, 'Bad direction', 'ticket-dir'),
    'PT400', 'refused direction ' || bad.direction
)
from (values ('''refund'''), ('''CREDIT'''), ('null')) as bad (direction);
select tests.assert_raises(
    format('select billing.adjust_balance(%L, %L, 1, %s, %L)',
        current_setting('t.user'), 'credit', bad.reason, 'ticket-reason'),
    'PT400', 'refused reason ' || left(bad.reason, 20)
)
from (
    values ('null'), (''''''), ('''   '''), ('''ok'''), (quote_literal(repeat('x', 501))),
    (quote_literal('two' || chr(10) || 'lines'))
) as bad (reason);
select tests.assert_raises(
    format('select billing.adjust_balance(%L, %L, 1, %L, %s)',
        current_setting('t.user'), 'credit', 'Bad key', bad.k),
    'PT400', 'refused key ' || bad.k
)
from (values ('null'), (''''''), ('''a key'''), (quote_literal(repeat('k', 256)))) as bad (k);
select tests.assert_raises(
    'select billing.adjust_balance(null, ''credit'', 1, ''No user'', ''ticket-nouser'')',
    'PT400', 'the user is required'
);
select tests.assert_raises(
    format('select billing.adjust_balance(%L, %L, 1, %L, %L)',
        gen_random_uuid(), 'credit', 'Unknown user', 'ticket-unknown'),
    'PT404', 'an unknown user'
);
select tests.assert_eq(
    billing.adjust_balance(
        current_setting('t.user')::uuid, 'credit', 10000, 'The largest credit', 'ticket-max'
    ) ->> 'amount',
    '10000.00', '$10,000 is the most one adjustment moves'
);
select tests.assert_eq(
    (select count(*) from public.balance_transactions as bt
        where bt.idempotency_key like 'adjustment:ticket-%'),
    5::bigint, 'only the accepted adjustments were written'
);
select tests.assert_eq((select count(*) from monitoring.ledger_drift), 0::bigint, 'no drift');

-- Auto-refill: a debit below the threshold enqueues a refill, like any debit; a credit
-- that reaches the threshold cancels it, like any credit.
select tests.reset_role();
select set_config('t.refill', tests.create_user('ops-refill@example.test', 'classic')::text, true);
select tests.authenticate_as_service_role();
select billing.credit_topup(current_setting('t.refill')::uuid, 1000, 'pi_ops_refill');
select billing.save_payment_method(current_setting('t.refill')::uuid, 'cus_ops', 'pm_ops');
select tests.reset_role();
select tests.authenticate_as(current_setting('t.refill')::uuid);
select public.update_auto_refill_settings(true, 50, 10);
select tests.reset_role();
select tests.authenticate_as_service_role();
select billing.adjust_balance(
    current_setting('t.refill')::uuid, 'debit', 5, 'Correction', 'refill-debit'
);
select tests.assert_eq(
    (select array_agg(r.status) from public.refill_requests as r
        where r.user_id = current_setting('t.refill')::uuid),
    array['pending'], 'the debit below the threshold enqueued a refill'
);
select billing.adjust_balance(
    current_setting('t.refill')::uuid, 'credit', 4.99, 'Not yet enough', 'refill-credit-1'
);
select tests.assert_eq(
    (select array_agg(r.status) from public.refill_requests as r
        where r.user_id = current_setting('t.refill')::uuid),
    array['pending'], 'a credit below the threshold leaves the refill waiting'
);
select billing.adjust_balance(
    current_setting('t.refill')::uuid, 'credit', 0.01, 'Goodwill', 'refill-credit-2'
);
select tests.assert_eq(
    (select array_agg(r.status) from public.refill_requests as r
        where r.user_id = current_setting('t.refill')::uuid),
    array['cancelled'], 'a credit reaching the threshold cancels the waiting refill'
);

/* ------------------------------------------------------------------------
 * Plan changes
 * ------------------------------------------------------------------------ */

-- A starter account bought its free number and called on the last day of February: the
-- call is settled in March on February's hold, so it uses none of March's minutes.
select set_config('billing.now', '2027-02-28 23:50:00+00', true);
select tests.reset_role();
select set_config('t.mover', tests.create_user('ops-mover@example.test', 'starter')::text, true);
select tests.authenticate_as_service_role();
select billing.credit_topup(current_setting('t.mover')::uuid, 2000, 'pi_ops_mover');
select billing.confirm_number(
    (billing.reserve_number(current_setting('t.mover')::uuid, '+14155550190') ->> 'purchaseId')::uuid,
    'PN-ops-1'
);
select billing.authorize_call('CA-ops-feb', current_setting('t.mover')::uuid);
select set_config('billing.now', '2027-03-10 12:00:00+00', true);
select billing.settle_call('CA-ops-feb', current_setting('t.mover')::uuid, 600);
select billing.authorize_call('CA-ops-mar', current_setting('t.mover')::uuid);
select billing.settle_call('CA-ops-mar', current_setting('t.mover')::uuid, 3000);
select tests.assert_eq(
    (select cb.free_minutes_remaining from public.call_balance as cb
        where cb.user_id = current_setting('t.mover')::uuid),
    150, '50 of March''s 200 free minutes used'
);

-- Not while a call is in progress: each call is billed under the plan that authorized it.
select billing.authorize_call('CA-ops-open', current_setting('t.mover')::uuid);
select tests.assert_raises(
    format('select billing.change_plan(%L, %L, %L)',
        current_setting('t.mover'), 'classic', 'move-1'),
    'PT409', 'a call in progress holds the plan'
);
select billing.settle_call('CA-ops-open', current_setting('t.mover')::uuid, 0);

-- Starter → classic: no free minutes, the number rings until its paid month ends.
select set_config('t.move1', billing.change_plan(
    current_setting('t.mover')::uuid, 'classic', 'move-1', 'Asked for pay as you go'
)::text, true);
select tests.assert_eq(
    current_setting('t.move1')::jsonb - 'transactionId' - 'numbersToRelease',
    jsonb_build_object(
        'userId', current_setting('t.mover'), 'fromPlan', 'starter', 'toPlan', 'classic',
        'freeMinutesUsed', 50, 'freeMinutesRemaining', 0, 'autoRefillAmount', 50,
        'numbersKept', '[]'::jsonb, 'note', 'Asked for pay as you go', 'duplicate', false
    ),
    'the change answers what it did'
);
select tests.assert_eq(
    (select n ->> 'phoneNumber'
        from jsonb_array_elements(current_setting('t.move1')::jsonb -> 'numbersToRelease') as n),
    '+14155550190', 'the number is to be released'
);
select tests.assert_eq(
    (select (n ->> 'releaseAt')::timestamptz
        from jsonb_array_elements(current_setting('t.move1')::jsonb -> 'numbersToRelease') as n),
    '2027-03-28 23:50:00+00'::timestamptz, 'when the month it was paid for ends'
);
select tests.assert_eq(
    (select array[cb.plan_id, cb.free_minutes_remaining::text] from public.call_balance as cb
        where cb.user_id = current_setting('t.mover')::uuid),
    array['classic', '0'], 'the account is on classic with no free minutes'
);
select tests.assert_eq(
    (select array[bt.type, bt.reason, bt.amount::text, (bt.balance_after - bt.balance_before)::text,
        bt.description]
        from public.balance_transactions as bt
        where bt.id = (current_setting('t.move1')::jsonb ->> 'transactionId')::uuid),
    array['plan_change', 'plan_change', '0.00', '0.00', 'Plan changed from Starter to Classic'],
    'a zero-amount plan_change entry in the ledger'
);
select tests.assert_true(
    (select a.message ~ '^Your plan is now Classic\. Free minutes left this month: 0\. '
        from public.billing_alerts as a
        where a.user_id = current_setting('t.mover')::uuid and a.type = 'plan_changed'),
    'the customer is told'
);
select tests.assert_eq(
    billing.number_owner('+14155550190'), current_setting('t.mover')::uuid,
    'the number still rings'
);

-- Replays.
select tests.assert_eq(
    billing.change_plan(
        current_setting('t.mover')::uuid, 'classic', 'move-1', 'Asked for pay as you go'
    ),
    current_setting('t.move1')::jsonb || '{"duplicate": true}',
    'a replay answers the first result'
);
select tests.assert_raises(
    format('select billing.change_plan(%L, %L, %L, %L)',
        current_setting('t.mover'), 'starter', 'move-1', 'Asked for pay as you go'),
    'PT409', 'a replayed key with another plan'
);
select tests.assert_raises(
    format('select billing.change_plan(%L, %L, %L)',
        current_setting('t.mover'), 'classic', 'move-1'),
    'PT409', 'a replayed key with another note'
);
select tests.assert_raises(
    format('select billing.change_plan(%L, %L, %L, %L)',
        current_setting('t.user'), 'classic', 'move-1', 'Asked for pay as you go'),
    'PT409', 'a replayed key for another account'
);
select tests.assert_raises(
    format('select billing.change_plan(%L, %L, %L)',
        current_setting('t.mover'), 'classic', 'move-again'),
    'PT409', 'already on the plan'
);

-- The month's renewal never charges it; it is released once its paid month has ended.
select tests.assert_eq(
    (select count(*) from billing.numbers_to_release(10)), 0::bigint,
    'not released before its paid month ends'
);

-- Back to starter before then: the allowance less what was used, and the number stays.
select set_config('billing.now', '2027-03-20 12:00:00+00', true);
select set_config('t.move2', billing.change_plan(
    current_setting('t.mover')::uuid, 'starter', 'move-2'
)::text, true);
select tests.assert_eq(
    (current_setting('t.move2')::jsonb ->> 'freeMinutesRemaining')::integer, 150,
    'switching back never adds minutes'
);
select tests.assert_eq(
    (select array_agg(n ->> 'phoneNumber')
        from jsonb_array_elements(current_setting('t.move2')::jsonb -> 'numbersKept') as n),
    array['+14155550190'], 'the number stays'
);
select tests.assert_eq(
    (select array[n.release_requested_at, n.release_after] from public.user_phone_numbers as n
        where n.phone_number = '+14155550190'),
    array[null, null]::timestamptz [], 'no release pending'
);

-- And to classic again: at the end of its month the number is not renewed but released.
select billing.change_plan(current_setting('t.mover')::uuid, 'classic', 'move-3');
select set_config('billing.now', '2027-03-29 00:00:00+00', true);
select set_config('t.balance_before_renewal', (select cb.balance::text from public.call_balance as cb
    where cb.user_id = current_setting('t.mover')::uuid), true);
select tests.assert_eq(
    (billing.renew_numbers() ->> 'renewed')::integer, 0, 'no renewal'
);
select tests.assert_eq(
    (select cb.balance::text from public.call_balance as cb
        where cb.user_id = current_setting('t.mover')::uuid),
    current_setting('t.balance_before_renewal'), 'nothing charged'
);
select tests.assert_eq(
    (select array_agg(n.phone_number) from billing.numbers_to_release(10) as n),
    array['+14155550190'], 'handed to the release job'
);
select set_config('billing.now', '2027-03-10 12:00:00+00', true);

-- Classic → starter with nothing used: the whole allowance.
select tests.assert_eq(
    (billing.change_plan(current_setting('t.user')::uuid, 'starter', 'move-user')
        ->> 'freeMinutesRemaining')::integer,
    200, 'the new plan''s allowance'
);

-- Not while a number purchase is pending, when the new plan sells no numbers.
select tests.reset_role();
select set_config('t.buyer', tests.create_user('ops-buyer@example.test', 'starter')::text, true);
select tests.authenticate_as_service_role();
select billing.reserve_number(current_setting('t.buyer')::uuid, '+14155550191');
select tests.assert_raises(
    format('select billing.change_plan(%L, %L, %L)',
        current_setting('t.buyer'), 'classic', 'move-buyer'),
    'PT409', 'a pending purchase'
);

-- To a plan without numbers: a number in its paid month rings until it ends, a past-due
-- number (its paid month is over) is released at once.
select tests.reset_role();
select set_config('t.lapsed', tests.create_user('ops-lapsed@example.test', 'starter')::text, true);
select tests.authenticate_as_service_role();
select billing.credit_topup(current_setting('t.lapsed')::uuid, 1000, 'pi_ops_lapsed');
select billing.confirm_number(
    (billing.reserve_number(current_setting('t.lapsed')::uuid, '+14155550192') ->> 'purchaseId')::uuid,
    'PN-ops-free'
);
select billing.confirm_number(
    (billing.reserve_number(current_setting('t.lapsed')::uuid, '+14155550193') ->> 'purchaseId')::uuid,
    'PN-ops-paid'
);
select billing.adjust_balance(
    current_setting('t.lapsed')::uuid, 'debit', 8, 'Spent elsewhere', 'lapsed-debit'
);
select set_config('billing.now', '2027-04-10 13:00:00+00', true);
select billing.renew_numbers();
select tests.assert_eq(
    (select array_agg(n.status order by n.phone_number) from public.user_phone_numbers as n
        where n.user_id = current_setting('t.lapsed')::uuid),
    array['active', 'past_due'], 'the free number renewed, the paid one is past due'
);
select set_config('t.lapsed_move', billing.change_plan(
    current_setting('t.lapsed')::uuid, 'classic', 'move-lapsed'
)::text, true);
select tests.assert_eq(
    (select array_agg(n ->> 'phoneNumber' order by n ->> 'phoneNumber')
        from jsonb_array_elements(current_setting('t.lapsed_move')::jsonb -> 'numbersToRelease') as n
        where (n ->> 'releaseAt')::timestamptz = '2027-04-10 13:00:00+00'),
    array['+14155550193'], 'the past-due number is released now'
);
select tests.assert_eq(
    (select array_agg(n ->> 'phoneNumber' order by n ->> 'phoneNumber')
        from jsonb_array_elements(current_setting('t.lapsed_move')::jsonb -> 'numbersToRelease') as n
        where (n ->> 'releaseAt')::timestamptz = '2027-05-10 12:00:00+00'),
    array['+14155550192'], 'the renewed one at the end of its paid month'
);
select tests.assert_eq(
    (select array_agg(n.phone_number) from billing.numbers_to_release(10) as n
        where n.user_id = current_setting('t.lapsed')::uuid),
    array['+14155550193'], 'only the past-due number goes to the release job now'
);
select set_config('billing.now', '2027-03-10 12:00:00+00', true);

-- Auto-refill: an amount the new plan does not offer becomes its first amount; a retired
-- plan is not offered.
select tests.reset_role();
insert into public.billing_plans (
    id, name, price_per_minute, top_up_presets, auto_refill_amounts,
    default_auto_refill_threshold
) values
('ops_small', 'Small', 0.05, array[20]::numeric [], array[20, 40]::numeric [], 10);
insert into public.billing_plans (
    id, name, price_per_minute, top_up_presets, auto_refill_amounts,
    default_auto_refill_threshold, is_active
) values
('ops_retired', 'Retired', 0.05, array[20]::numeric [], array[20]::numeric [], 10, false);
select tests.authenticate_as_service_role();
select tests.assert_eq(
    billing.change_plan(current_setting('t.stranger')::uuid, 'ops_small', 'move-small')
    ->> 'autoRefillAmount',
    '20.00', 'the new plan''s first amount'
);
select tests.assert_eq(
    (select cb.auto_refill_amount from public.call_balance as cb
        where cb.user_id = current_setting('t.stranger')::uuid),
    20.00, 'stored'
);
select tests.assert_raises(
    format('select billing.change_plan(%L, %L, %L)',
        current_setting('t.stranger'), 'ops_retired', 'move-retired'),
    'PT409', 'a retired plan'
);

-- Bad input.
select tests.assert_raises(
    format('select billing.change_plan(%L, %L, %L)',
        current_setting('t.stranger'), 'platinum', 'move-bad'),
    'PT404', 'an unknown plan'
);
select tests.assert_raises(
    format('select billing.change_plan(%L, %s, %L)',
        current_setting('t.stranger'), bad.plan, 'move-bad'),
    'PT400', 'refused plan ' || bad.plan
)
from (values ('null'), (''''''), ('''  ''')) as bad (plan);
select tests.assert_raises(
    format('select billing.change_plan(%L, %L, %L)', gen_random_uuid(), 'classic', 'move-bad'),
    'PT404', 'an unknown user'
);
select tests.assert_raises(
    'select billing.change_plan(null, ''classic'', ''move-bad'')', 'PT400', 'the user is required'
);
select tests.assert_raises(
    format('select billing.change_plan(%L, %L, null)', current_setting('t.stranger'), 'classic'),
    'PT400', 'the key is required'
);
select tests.assert_raises(
    format('select billing.change_plan(%L, %L, %L, %L)',
        current_setting('t.stranger'), 'classic', 'move-bad', repeat('n', 501)),
    'PT400', 'a note of 501 characters'
);
select tests.assert_eq((select count(*) from monitoring.ledger_drift), 0::bigint, 'no drift');

-- Zero stays refused for every other entry.
select tests.reset_role();
select tests.assert_raises(
    format(
        'insert into public.balance_transactions (user_id, amount, type, reason, balance_before, '
        || 'balance_after, idempotency_key) values (%L, 0, %L, %L, 0, 0, %L)',
        current_setting('t.user'), 'debit', 'adjustment', 'zero-debit'
    ),
    '23514', 'a zero debit is refused'
);
select tests.assert_raises(
    format(
        'insert into public.balance_transactions (user_id, amount, type, reason, balance_before, '
        || 'balance_after, idempotency_key) values (%L, 1, %L, %L, 0, 1, %L)',
        current_setting('t.user'), 'plan_change', 'plan_change', 'plan-change-with-money'
    ),
    '23514', 'a plan change moves no money'
);
select tests.assert_raises(
    format(
        'insert into public.balance_transactions (user_id, amount, type, reason, balance_before, '
        || 'balance_after, idempotency_key) values (%L, 0, %L, %L, 0, 0, %L)',
        current_setting('t.user'), 'plan_change', 'adjustment', 'plan-change-other-reason'
    ),
    '23514', 'a plan_change entry has the plan_change reason'
);

/* ------------------------------------------------------------------------
 * Who may use them, and who sees the entries
 * ------------------------------------------------------------------------ */

select tests.authenticate_as(current_setting('t.mover')::uuid);
select tests.assert_eq(
    (select array_agg(bt.reason order by bt.created_at, bt.reason)
        from public.balance_transactions as bt where bt.reason = 'plan_change'),
    array['plan_change', 'plan_change', 'plan_change'], 'the owner sees their plan changes'
);
select tests.assert_raises(
    format('select billing.change_plan(%L, %L, %L)',
        current_setting('t.mover'), 'starter', 'self-serve'),
    '42501', 'a user cannot change their plan'
);
select tests.assert_raises(
    format('select billing.adjust_balance(%L, %L, 5, %L, %L)',
        current_setting('t.mover'), 'credit', 'Free money', 'self-credit'),
    '42501', 'a user cannot adjust their balance'
);
select tests.reset_role();
select tests.authenticate_as(current_setting('t.stranger')::uuid);
select tests.assert_eq(
    (select count(*) from public.balance_transactions as bt
        where bt.user_id in (current_setting('t.mover')::uuid, current_setting('t.user')::uuid)),
    0::bigint, 'another user sees none of them'
);
select tests.reset_role();
select tests.clear_authentication();
select tests.assert_raises(
    format('select billing.change_plan(%L, %L, %L)',
        current_setting('t.mover'), 'starter', 'anon'),
    '42501', 'anon cannot change a plan'
);
select tests.assert_raises(
    format('select billing.adjust_balance(%L, %L, 5, %L, %L)',
        current_setting('t.mover'), 'credit', 'Free money', 'anon'),
    '42501', 'anon cannot adjust a balance'
);
select tests.reset_role();
