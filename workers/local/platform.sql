-- Local platform: what a Supabase project provides and a plain Postgres lacks.
--
-- Applied by `callbalance migrate` before the migrations, only on a database
-- that is not a Supabase project (no `auth.users`, or one this script made).
-- Every statement is idempotent. Not a migration: migrations must apply
-- unchanged to a real Supabase project, where all of this already exists.

/* Roles, with the attributes Supabase gives them */

do $$
begin
    if not exists (select from pg_catalog.pg_roles where rolname = 'anon') then
        create role anon nologin noinherit;
    end if;
    if not exists (select from pg_catalog.pg_roles where rolname = 'authenticated') then
        create role authenticated nologin noinherit;
    end if;
    if not exists (select from pg_catalog.pg_roles where rolname = 'service_role') then
        create role service_role nologin noinherit bypassrls;
    end if;
    if not exists (select from pg_catalog.pg_roles where rolname = 'authenticator') then
        create role authenticator login noinherit;
    end if;
end
$$;

grant anon, authenticated, service_role to authenticator;

/* The API roles use the public schema, and Supabase grants them everything
   created there by default (the project's first migration revokes that). */

grant usage on schema public to anon, authenticated, service_role;
alter default privileges in schema public
grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public
grant all on functions to anon, authenticated, service_role;
alter default privileges in schema public
grant all on sequences to anon, authenticated, service_role;

/* Schema auth: the users table and the JWT helpers, as Supabase defines them */

create schema if not exists auth;
comment on schema auth is 'callbalance local platform';
grant usage on schema auth to anon, authenticated, service_role;

create table if not exists auth.users (
    id uuid primary key default gen_random_uuid(),
    email text unique,
    phone text unique,
    raw_app_meta_data jsonb not null default '{}'::jsonb,
    raw_user_meta_data jsonb not null default '{}'::jsonb,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

grant select on auth.users to service_role;

-- PostgREST sets these settings transaction-locally; after commit they read
-- '' rather than NULL, hence the nullif.
create or replace function auth.uid() returns uuid
language sql stable
set search_path = ''
as $$
    select coalesce(
        nullif(current_setting('request.jwt.claim.sub', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
    )::uuid
$$;

create or replace function auth.role() returns text
language sql stable
set search_path = ''
as $$
    select coalesce(
        nullif(current_setting('request.jwt.claim.role', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
    )::text
$$;

create or replace function auth.email() returns text
language sql stable
set search_path = ''
as $$
    select coalesce(
        nullif(current_setting('request.jwt.claim.email', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email')
    )::text
$$;

create or replace function auth.jwt() returns jsonb
language sql stable
set search_path = ''
as $$
    select coalesce(
        nullif(current_setting('request.jwt.claim', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')
    )::jsonb
$$;

grant execute on function auth.uid() to anon, authenticated, service_role;
grant execute on function auth.role() to anon, authenticated, service_role;
grant execute on function auth.email() to anon, authenticated, service_role;
grant execute on function auth.jwt() to anon, authenticated, service_role;

/* Schema extensions and the Realtime publication */

create schema if not exists extensions;
grant usage on schema extensions to anon, authenticated, service_role;

do $$
begin
    if not exists (select from pg_catalog.pg_publication where pubname = 'supabase_realtime') then
        create publication supabase_realtime;
    end if;
end
$$;
