-- pgbench: settle one call on a random account, as the Twilio status worker does: one
-- statement, one transaction. The session acts as service_role (run_ledger_bench.py sets
-- PGOPTIONS=-c role=service_role, as a worker pool dedicated to the service role would).
-- Accounts 1..:accounts are users md5('bench-' || n)::uuid; each call has a new sid and lasts
-- 1 s to 10 min, so it is billed and written to the ledger.
\set aid random(1, :accounts)
\set seconds random(1, 600)
select billing.settle_call('CA' || md5(random()::text), md5('bench-' || :aid)::uuid, :seconds);
