/*
 * The operator's tools: change an account's plan, adjust a balance.
 *
 * Both are service_role functions for support teams, idempotent on a key the
 * caller chooses (the same key with the same arguments answers the first
 * result again with duplicate: true; with other arguments it is PT409), and
 * both leave their trail in the ledger, where the customer sees it too:
 *
 * - billing.adjust_balance: a goodwill credit or a correction debit with a
 *   required reason, posted as reason 'adjustment' (type credit or debit). A
 *   debit never takes the balance, less what calls in progress hold, below
 *   zero. The customer gets a billing alert.
 * - billing.change_plan: moves the account to another plan under its row lock
 *   and posts a zero-amount entry of type and reason 'plan_change' naming
 *   both plans and what changed. The rules (docs/rpc.md, "Operator tools"):
 *     free minutes  this month's allowance becomes the new plan's, less the
 *                   free minutes calls used this month, never below zero, so
 *                   switching back and forth never adds minutes;
 *     calls         refused (PT409) while a call holds funds or minutes: a
 *                   call is always settled under the plan that authorized it;
 *     auto-refill   the amount is kept when the new plan offers it, else
 *                   becomes the new plan's first amount; on/off and the
 *                   threshold are kept;
 *     numbers       a plan that sells none keeps the account's numbers ringing
 *                   until their paid month ends (next_renewal_at), then they
 *                   are released and never renewed or charged again; a past
 *                   due number is released at once; refused (PT409) while a
 *                   purchase is pending; moving back to a plan that sells
 *                   numbers before the release keeps them.
 *
 * The ledger learns one new type and reason, 'plan_change', the only entry
 * whose amount is zero (the entry rule says so, in one check).
 */

/* ------------------------------------------------------------------------
 * The ledger's vocabulary: a zero-amount plan_change entry
 * ------------------------------------------------------------------------ */

alter domain public.transaction_type drop constraint transaction_type_check;
alter domain public.transaction_type add constraint transaction_type_check
check (value in ('credit', 'debit', 'refund', 'plan_change'));

alter domain public.transaction_reason drop constraint transaction_reason_check;
alter domain public.transaction_reason add constraint transaction_reason_check
check (
    value in (
        'topup', 'auto_refill', 'call', 'number_purchase', 'number_renewal',
        'number_cancel', 'refund', 'dispute', 'dispute_won', 'adjustment', 'plan_change'
    )
);

-- Zero is no longer refused by the domain: the entry rule below allows it for plan_change only.
alter domain public.ledger_amount drop constraint ledger_amount_check;
alter domain public.ledger_amount add constraint ledger_amount_check
check (value between -10000 and 10000);

alter table public.balance_transactions drop constraint balance_transactions_entry_rule;
alter table public.balance_transactions add constraint balance_transactions_entry_rule check (
    balance_after = balance_before + amount
    and (amount > 0) = (type = 'credit')
    and (amount = 0) = (type = 'plan_change')
    and (type = 'plan_change') = (reason = 'plan_change')
);

/* ------------------------------------------------------------------------
 * The customer's alerts: an adjustment, a plan change
 * ------------------------------------------------------------------------ */

alter table public.billing_alerts drop constraint billing_alerts_type_check;
alter table public.billing_alerts add constraint billing_alerts_type_check check (
    type in (
        'low_balance', 'refill_requested', 'refill_succeeded', 'refill_failed',
        'auto_refill_disabled', 'auto_refill_cap_reached', 'number_past_due',
        'number_released', 'payment_reversed', 'dispute', 'dispute_won',
        'balance_adjusted', 'plan_changed'
    )
);

/* ------------------------------------------------------------------------
 * Numbers released at a set time (the end of the month paid for)
 * ------------------------------------------------------------------------ */

alter table public.user_phone_numbers add column release_after timestamptz;

comment on column public.user_phone_numbers.release_after is
'Not released before this time (the end of the month paid for, when a plan change to a plan '
'without numbers marked it); null: as soon as marked.';

-- As before, but a number is handed out only once its release_after has passed.

create or replace function billing.numbers_to_release(p_limit integer default 50)
returns setof public.user_phone_numbers
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_now timestamptz := billing.now();
begin
    if p_limit is null or p_limit < 1 or p_limit > 1000 then
        perform billing._raise('PT400', 'The limit must be between 1 and 1000.');
    end if;
    return query
    with picked as (
        select n.id
        from public.user_phone_numbers as n
        where
            n.release_requested_at is not null
            and (n.release_after is null or n.release_after <= v_now)
            and n.status <> 'released'
            and (n.release_claimed_at is null or n.release_claimed_at < v_now - interval '10 minutes')
        order by n.release_requested_at, n.id
        limit p_limit
        for update of n skip locked
    ),

    claimed as (
        update public.user_phone_numbers as n
        set release_claimed_at = v_now, updated_at = v_now
        from picked
        where n.id = picked.id
        returning n.*
    )

    select * from claimed;
end
$$;

revoke execute on function billing.numbers_to_release(integer) from public;
grant execute on function billing.numbers_to_release(integer) to service_role;

/* ------------------------------------------------------------------------
 * billing.adjust_balance: a goodwill credit or a correction debit
 * ------------------------------------------------------------------------ */

/*
 * p_direction: 'credit' or 'debit'; p_amount: positive dollars in whole cents,
 * at most $10,000; p_reason: 3 to 500 characters on one line, shown to the
 * customer. Returns {transactionId, userId, direction, amount, reason,
 * balance, duplicate}; a replay answers the first result.
 */
create or replace function billing.adjust_balance(
    p_user_id uuid,
    p_direction text,
    p_amount numeric,
    p_reason text,
    p_idempotency_key text
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_reason text := pg_catalog.btrim(p_reason);
    v_amount numeric(12, 2);
    v_key text;
    v_account public.call_balance;
    v_existing public.balance_transactions;
    v_entry public.balance_transactions;
    v_held numeric(12, 2);
begin
    perform billing._check_id(p_idempotency_key, 'idempotency key');
    if p_user_id is null then
        perform billing._raise('PT400', 'The user id is required.');
    end if;
    if p_direction is null or p_direction not in ('credit', 'debit') then
        perform billing._raise('PT400', 'Say whether the adjustment is a credit or a debit.');
    end if;
    if p_amount is null then
        perform billing._raise('PT400', 'The amount is required.');
    end if;
    -- Checked as given, before the cast to cents could round or overflow.
    perform billing._check_money(p_amount, 'amount');
    if p_amount <= 0 then
        perform billing._raise('PT400',
            'The amount must be positive; the direction (credit or debit) gives its sign.');
    end if;
    if p_amount > 10000 then
        perform billing._raise('PT400', 'An adjustment cannot exceed $10,000.');
    end if;
    if v_reason is null or pg_catalog.length(v_reason) < 3 then
        perform billing._raise('PT400',
            'A reason of at least 3 characters is required: the customer sees it.');
    end if;
    if pg_catalog.length(v_reason) > 500 or v_reason ~ '[[:cntrl:]]' then
        perform billing._raise('PT400', 'The reason must be one line of at most 500 characters.');
    end if;
    v_amount := p_amount;
    v_key := 'adjustment:' || p_idempotency_key;

    v_account := billing._lock_account(p_user_id);  -- PT404 for an unknown user
    select bt.* into v_existing
    from public.balance_transactions as bt
    where bt.idempotency_key = v_key;
    if found then
        if v_existing.user_id <> p_user_id
            or v_existing.amount <> (case p_direction when 'debit' then -v_amount else v_amount end)
            or v_existing.metadata ->> 'reason' is distinct from v_reason then
            perform billing._raise('PT409',
                'This idempotency key was already used for another adjustment.');
        end if;
        return pg_catalog.jsonb_build_object(
            'transactionId', v_existing.id,
            'userId', v_existing.user_id,
            'direction', p_direction,
            'amount', v_amount,
            'reason', v_reason,
            'balance', v_existing.balance_after,
            'duplicate', true
        );
    end if;

    if p_direction = 'debit' then
        v_held := billing._held_amount(p_user_id);
        if v_account.balance - v_held < v_amount then
            raise exception using
                errcode = 'PT409',
                message = pg_catalog.format(
                    'A debit of $%s would take the balance below zero: the balance is $%s, '
                    || 'of which $%s is held by calls in progress.',
                    v_amount, v_account.balance, v_held),
                detail = pg_catalog.jsonb_build_object(
                    'balance', v_account.balance,
                    'heldAmount', v_held,
                    'available', v_account.balance - v_held,
                    'amount', v_amount
                )::text;
        end if;
    end if;

    begin
        v_entry := billing._post(
            p_user_id, case p_direction when 'debit' then -v_amount else v_amount end,
            p_direction, 'adjustment', 'Balance adjustment: ' || v_reason, v_key, null,
            pg_catalog.jsonb_build_object(
                'reason', v_reason, 'direction', p_direction, 'amount', v_amount
            )
        );
    exception when unique_violation then
        -- The same key, committed meanwhile for another account.
        perform billing._raise('PT409',
            'This idempotency key was already used for another adjustment.');
    end;
    perform billing._alert(
        p_user_id, 'balance_adjusted',
        pg_catalog.format('$%s was %s your balance: %s', v_amount,
            case p_direction when 'debit' then 'removed from' else 'added to' end, v_reason),
        pg_catalog.jsonb_build_object('transactionId', v_entry.id, 'direction', p_direction,
            'amount', v_amount, 'reason', v_reason, 'balance', v_entry.balance_after)
    );
    if p_direction = 'debit' then
        -- Like any debit: a low-balance alert, or a refill when auto-refill is on.
        perform billing._after_debit(p_user_id, v_entry.balance_before);
    end if;
    -- A credit that reaches the threshold cancels a waiting refill (trigger on call_balance).
    return pg_catalog.jsonb_build_object(
        'transactionId', v_entry.id,
        'userId', p_user_id,
        'direction', p_direction,
        'amount', v_amount,
        'reason', v_reason,
        'balance', v_entry.balance_after,
        'duplicate', false
    );
end
$$;

comment on function billing.adjust_balance(uuid, text, numeric, text, text) is
'Support: credit or debit a balance with a reason the customer sees; idempotent on the key.';

revoke execute on function billing.adjust_balance(uuid, text, numeric, text, text) from public;
grant execute on function billing.adjust_balance(uuid, text, numeric, text, text)
to service_role;

/* ------------------------------------------------------------------------
 * billing.change_plan: move an account to another plan
 * ------------------------------------------------------------------------ */

/*
 * Free minutes calls used this month: those of calls settled this month,
 * less those of calls authorized last month (they used that month's hold).
 */
create or replace function billing._free_minutes_used_this_month(p_user_id uuid)
returns integer
language sql
stable
set search_path = ''
as $$
    select coalesce(sum(l.free_minutes_used), 0)::integer
    from public.twilio_call_logs as l
    left join public.call_holds as h on l.call_sid = h.call_sid
    where
        l.user_id = p_user_id
        and l.created_at >= pg_catalog.date_trunc('month', billing.now(), 'UTC')
        and (h.created_at is null
            or h.created_at >= pg_catalog.date_trunc('month', billing.now(), 'UTC'))
$$;

revoke execute on function billing._free_minutes_used_this_month(uuid) from public;

/*
 * p_plan_id: an active plan other than the account's; p_note: optional, at
 * most 500 characters, kept in the ledger entry. Returns {transactionId,
 * userId, fromPlan, toPlan, freeMinutesUsed, freeMinutesRemaining,
 * autoRefillAmount, numbersToRelease, numbersKept, note, duplicate}; a replay
 * answers the first result.
 */
create or replace function billing.change_plan(
    p_user_id uuid,
    p_plan_id text,
    p_idempotency_key text,
    p_note text default null
)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_note text := nullif(pg_catalog.btrim(p_note), '');
    v_key text;
    v_account public.call_balance;
    v_existing public.balance_transactions;
    v_old public.billing_plans;
    v_new public.billing_plans;
    v_now timestamptz := billing.now();
    v_calls integer;
    v_used integer;
    v_free integer;
    v_refill_amount numeric(12, 2);
    v_releasing jsonb := '[]'::jsonb;
    v_kept jsonb := '[]'::jsonb;
    v_result jsonb;
    v_entry public.balance_transactions;
begin
    perform billing._check_id(p_idempotency_key, 'idempotency key');
    if p_user_id is null then
        perform billing._raise('PT400', 'The user id is required.');
    end if;
    if p_plan_id is null or pg_catalog.btrim(p_plan_id) = '' then
        perform billing._raise('PT400', 'The plan id is required.');
    end if;
    if pg_catalog.length(v_note) > 500 or v_note ~ '[[:cntrl:]]' then
        perform billing._raise('PT400', 'The note must be one line of at most 500 characters.');
    end if;
    v_key := 'plan_change:' || p_idempotency_key;

    v_account := billing._lock_account(p_user_id);  -- PT404 for an unknown user
    select bt.* into v_existing
    from public.balance_transactions as bt
    where bt.idempotency_key = v_key;
    if found then
        if v_existing.user_id <> p_user_id
            or v_existing.metadata ->> 'toPlan' is distinct from p_plan_id
            or v_existing.metadata ->> 'note' is distinct from v_note then
            perform billing._raise('PT409',
                'This idempotency key was already used for another plan change.');
        end if;
        return v_existing.metadata
            || pg_catalog.jsonb_build_object('transactionId', v_existing.id, 'duplicate', true);
    end if;

    select p.* into v_new from public.billing_plans as p where p.id = p_plan_id;
    if not found then
        perform billing._raise('PT404', pg_catalog.format('No such plan: %s.', p_plan_id));
    end if;
    if not v_new.is_active then
        perform billing._raise('PT409',
            pg_catalog.format('The %s plan is no longer offered.', v_new.name));
    end if;
    select p.* into v_old from public.billing_plans as p where p.id = v_account.plan_id;
    if v_old.id = v_new.id then
        perform billing._raise('PT409',
            pg_catalog.format('The account is already on the %s plan.', v_new.name));
    end if;
    select count(*) into v_calls
    from public.call_holds as h
    where h.user_id = p_user_id and h.released_at is null;
    if v_calls > 0 then
        raise exception using
            errcode = 'PT409',
            message = pg_catalog.format(
                'The account has %s call(s) in progress: change the plan once they have ended, '
                || 'so that each call is billed under the plan that authorized it.', v_calls),
            detail = pg_catalog.jsonb_build_object('callsInProgress', v_calls)::text;
    end if;
    if v_new.number_monthly_price is null and exists (
        select from public.user_phone_numbers as n
        where n.user_id = p_user_id and n.status = 'pending'
    ) then
        perform billing._raise('PT409',
            'A number purchase is in progress: change the plan once it is completed or cancelled.');
    end if;

    v_used := billing._free_minutes_used_this_month(p_user_id);
    v_free := greatest(v_new.free_minutes_monthly - v_used, 0);
    v_refill_amount := case
        when v_account.auto_refill_amount = any(v_new.auto_refill_amounts)
            then v_account.auto_refill_amount
        else v_new.auto_refill_amounts[1]
    end;

    if v_new.number_monthly_price is null then
        -- Paid through the end of the current month of each number: ringing until then.
        with marked as (
            update public.user_phone_numbers as n
            set
                release_requested_at = v_now,
                -- a past-due number's paid month is over: released at once
                release_after = case
                    when n.status = 'active' and n.next_renewal_at > v_now then n.next_renewal_at
                end,
                updated_at = v_now
            where
                n.user_id = p_user_id
                and n.status in ('active', 'past_due')
                and n.release_requested_at is null
            returning n.id, n.phone_number, coalesce(n.release_after, v_now) as release_at
        )

        select coalesce(pg_catalog.jsonb_agg(
            pg_catalog.jsonb_build_object(
                'numberId', m.id, 'phoneNumber', m.phone_number, 'releaseAt', m.release_at
            ) order by m.release_at, m.id
        ), '[]'::jsonb)
        into v_releasing
        from marked as m;
    else
        -- Numbers an earlier change set to be released later stay with the account.
        with kept as (
            update public.user_phone_numbers as n
            set release_requested_at = null, release_after = null, updated_at = v_now
            where
                n.user_id = p_user_id
                and n.status = 'active'
                and n.release_after > v_now
                and n.release_claimed_at is null
            returning n.id, n.phone_number
        )

        select coalesce(pg_catalog.jsonb_agg(
            pg_catalog.jsonb_build_object('numberId', k.id, 'phoneNumber', k.phone_number)
            order by k.phone_number, k.id
        ), '[]'::jsonb)
        into v_kept
        from kept as k;
    end if;

    update public.call_balance as cb
    set
        plan_id = v_new.id,
        free_minutes_remaining = v_free,
        auto_refill_amount = v_refill_amount,
        updated_at = v_now
    where cb.user_id = p_user_id;

    v_result := pg_catalog.jsonb_build_object(
        'userId', p_user_id,
        'fromPlan', v_old.id,
        'toPlan', v_new.id,
        'freeMinutesUsed', v_used,
        'freeMinutesRemaining', v_free,
        'autoRefillAmount', v_refill_amount,
        'numbersToRelease', v_releasing,
        'numbersKept', v_kept,
        'note', v_note
    );
    begin
        v_entry := billing._post(
            p_user_id, 0, 'plan_change', 'plan_change',
            pg_catalog.format('Plan changed from %s to %s', v_old.name, v_new.name),
            v_key, null, v_result
        );
    exception when unique_violation then
        -- The same key, committed meanwhile for another account.
        perform billing._raise('PT409',
            'This idempotency key was already used for another plan change.');
    end;
    perform billing._alert(
        p_user_id, 'plan_changed',
        pg_catalog.format('Your plan is now %s. Free minutes left this month: %s.', v_new.name,
            v_free)
        || case
            when pg_catalog.jsonb_array_length(v_releasing) > 0
                then pg_catalog.format(
                    ' The %s plan has no phone numbers: yours keep working until their paid '
                    || 'month ends, then they are released.', v_new.name)
            else ''
        end,
        v_result || pg_catalog.jsonb_build_object('transactionId', v_entry.id)
    );
    return v_result
        || pg_catalog.jsonb_build_object('transactionId', v_entry.id, 'duplicate', false);
end
$$;

comment on function billing.change_plan(uuid, text, text, text) is
'Support: move an account to another plan (free minutes, auto-refill, numbers); '
'idempotent on the key, recorded in the ledger.';

revoke execute on function billing.change_plan(uuid, text, text, text) from public;
grant execute on function billing.change_plan(uuid, text, text, text) to service_role;
