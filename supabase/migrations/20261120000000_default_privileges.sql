/*
 * Default privileges: start from nobody.
 *
 * Supabase grants anon, authenticated and service_role every privilege on
 * each new table, sequence and function in schema public, and Postgres lets
 * PUBLIC execute every new function. A billing system must not inherit
 * that: each later migration grants exactly what a role needs, next to the
 * object it grants on.
 */

alter default privileges in schema public
revoke all on tables from anon, authenticated, service_role;

alter default privileges in schema public
revoke all on sequences from anon, authenticated, service_role;

alter default privileges in schema public
revoke all on functions from anon, authenticated, service_role;

alter default privileges
revoke execute on functions from public;

alter default privileges in schema public
revoke execute on functions from public;
