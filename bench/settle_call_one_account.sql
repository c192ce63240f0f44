-- pgbench: every client settles calls on the same account (the worst case: one row lock).
\set seconds random(1, 600)
select billing.settle_call('CA' || md5(random()::text), md5('bench-1')::uuid, :seconds);
