-- pgbench: settle_call as PostgREST-style workers do it: role switched per transaction.
\set aid random(1, :accounts)
\set seconds random(1, 600)
begin;
set local role service_role;
select billing.settle_call('CA' || md5(random()::text), md5('bench-' || :aid)::uuid, :seconds);
end;
