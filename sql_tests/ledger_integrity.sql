-- The ledger cannot be rewritten, plans have one default, monitoring is for service_role.
-- (The seeds' own monitoring queries run verbatim in tests/test_ledger_security.py.)

select set_config('t.user', tests.create_user('integrity@example.test', 'classic')::text, true);
select tests.authenticate_as_service_role();
select billing.credit_topup(current_setting('t.user')::uuid, 2500, 'pi_integrity');
select billing.settle_call('CA-integrity', current_setting('t.user')::uuid, 61);

-- Append-only, for service_role and even for the owner.
select tests.assert_raises(
    'update public.balance_transactions set amount = 1', '42501',
    'service_role has no update privilege on the ledger'
);
select tests.reset_role();
select tests.assert_raises(
    'update public.balance_transactions set description = ''edited''', 'PT403',
    'the trigger refuses updates, even for the owner'
);
select tests.assert_raises(
    'delete from public.balance_transactions', 'PT403', 'the trigger refuses deletes'
);
select tests.assert_raises(
    'truncate public.balance_transactions cascade', 'PT403', 'and truncate'
);
select tests.assert_raises(
    format(
        'insert into public.balance_transactions (user_id, amount, type, reason, balance_before, '
        || 'balance_after, idempotency_key) values (%L, 5, %L, %L, 0, 6, %L)',
        current_setting('t.user'), 'credit', 'adjustment', 'bad-arithmetic'
    ),
    '23514', 'balance_after = balance_before + amount is a constraint'
);
select tests.assert_raises(
    format(
        'insert into public.balance_transactions (user_id, amount, type, reason, balance_before, '
        || 'balance_after, idempotency_key) values (%L, 5, %L, %L, 0, 5, %L)',
        current_setting('t.user'), 'debit', 'adjustment', 'bad-sign'
    ),
    '23514', 'a debit must be negative'
);
select tests.assert_raises(
    format(
        'insert into public.balance_transactions (user_id, amount, type, reason, balance_before, '
        || 'balance_after, idempotency_key) values (%L, 5, %L, %L, 0, 5, %L)',
        current_setting('t.user'), 'credit', 'adjustment', 'payment:pi_integrity'
    ),
    '23505', 'an idempotency key is unique'
);

-- Exactly one default plan; switching it is a data change (two updates, one transaction).
select tests.assert_eq(
    (select array_agg(p.id) from public.billing_plans as p where p.is_default),
    array['starter'], 'starter is the default'
);
select tests.assert_raises(
    'update public.billing_plans set is_default = true where id = ''classic''', '23505',
    'a second default plan is refused'
);
update public.billing_plans set is_default = false where is_default;
update public.billing_plans set is_default = true where id = 'classic';
select set_config('t.after_switch', tests.create_user('after-switch@example.test')::text, true);
select tests.assert_eq(
    (select cb.plan_id from public.call_balance as cb
        where cb.user_id = current_setting('t.after_switch')::uuid),
    'classic', 'new accounts follow the default flag'
);
select set_config(
    't.unknown_plan', tests.create_user('unknown-plan@example.test', 'platinum')::text, true
);
select tests.assert_eq(
    (select cb.plan_id from public.call_balance as cb
        where cb.user_id = current_setting('t.unknown_plan')::uuid),
    'classic', 'an unknown plan in app metadata falls back to the default'
);

select tests.authenticate_as_service_role();

-- The monitoring views answer service_role, and nobody else.
select tests.assert_eq(
    (select b.balance from monitoring.balances as b where b.email = 'integrity@example.test'),
    24.80, 'monitoring.balances'
);
select tests.assert_eq((select count(*) from monitoring.ledger_drift), 0::bigint, 'no drift');
select count(*) from monitoring.transactions;
select count(*) from monitoring.low_balances;
select count(*) from monitoring.refill_failures;
select count(*) from monitoring.daily_revenue;
select count(*) from monitoring.minutes_by_day;
select tests.reset_role();
select tests.authenticate_as(current_setting('t.user')::uuid);
select tests.assert_raises(
    'select * from monitoring.balances', '42501', 'users cannot read monitoring'
);
select tests.assert_raises(
    'select billing.now()', '42501', 'users cannot use the billing schema'
);
select tests.reset_role();
select tests.clear_authentication();
select tests.assert_raises(
    'select * from monitoring.ledger_drift', '42501', 'anon cannot read monitoring'
);
