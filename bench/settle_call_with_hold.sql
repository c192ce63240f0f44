-- pgbench: settle a call that was authorized first, as production calls are: every call has a
-- hold (billing.authorize_call at the voice request) that the settlement releases.
-- run_ledger_bench.py creates the holds before each run (call sids 'CAhold-<n>' on account
-- n % :accounts + 1, 60 min authorized, nothing held beyond that) and each transaction takes
-- the next one; the session acts as service_role.
\set seconds random(1, 600)
select billing.settle_call('CAhold-' || n, md5('bench-' || (n % :accounts + 1))::uuid, :seconds)
from pg_catalog.nextval('public.bench_hold_seq') as n;
