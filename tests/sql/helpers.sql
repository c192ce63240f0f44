-- The assertion vocabulary of sql_tests/ (loaded into the test template only).
--
--   tests.create_user(email text, plan text default null) returns uuid
--   tests.authenticate_as(user_id uuid)   act as that signed-in user (RLS applies)
--   tests.authenticate_as_service_role()  act as a worker
--   tests.clear_authentication()          act as anon
--   tests.reset_role()                    back to the test's superuser
--   tests.assert_eq(actual, expected, label)
--   tests.assert_true(condition, label)
--   tests.assert_raises(sql, sqlstate, label)  the statement fails with that SQLSTATE
--
-- A failed assertion raises, and the runner reports the file, line and label.

create schema if not exists tests;
grant usage on schema tests to anon, authenticated, service_role;

create or replace function tests.create_user(p_email text, p_plan text default null)
returns uuid
language plpgsql
as $$
declare
    v_id uuid;
begin
    insert into auth.users (email, raw_app_meta_data)
    values (
        p_email,
        case when p_plan is null then '{}'::jsonb else jsonb_build_object('plan', p_plan) end
    )
    returning id into v_id;
    return v_id;
end
$$;

create or replace function tests.authenticate_as(p_user_id uuid) returns void
language plpgsql
as $$
begin
    perform set_config('role', 'authenticated', true);
    perform set_config(
        'request.jwt.claims',
        jsonb_build_object('sub', p_user_id, 'role', 'authenticated', 'aud', 'authenticated')::text,
        true
    );
end
$$;

create or replace function tests.authenticate_as_service_role() returns void
language plpgsql
as $$
begin
    perform set_config('role', 'service_role', true);
    perform set_config('request.jwt.claims', '{"role": "service_role"}', true);
end
$$;

create or replace function tests.clear_authentication() returns void
language plpgsql
as $$
begin
    perform set_config('role', 'anon', true);
    perform set_config('request.jwt.claims', '{"role": "anon"}', true);
end
$$;

create or replace function tests.reset_role() returns void
language plpgsql
as $$
begin
    perform set_config('role', 'none', true);
    perform set_config('request.jwt.claims', '', true);
end
$$;

create or replace function tests.assert_eq(p_actual anycompatible, p_expected anycompatible, p_label text)
returns void
language plpgsql
as $$
begin
    if p_actual is distinct from p_expected then
        raise exception 'assertion failed: %: expected %, got %', p_label, p_expected, p_actual
            using errcode = 'P0001';
    end if;
end
$$;

create or replace function tests.assert_true(p_condition boolean, p_label text) returns void
language plpgsql
as $$
begin
    if p_condition is not true then
        raise exception 'assertion failed: %', p_label using errcode = 'P0001';
    end if;
end
$$;

create or replace function tests.assert_raises(p_sql text, p_sqlstate text, p_label text)
returns void
language plpgsql
as $$
begin
    begin
        execute p_sql;
    exception when others then
        if sqlstate = p_sqlstate then
            return;
        end if;
        raise exception 'assertion failed: %: expected SQLSTATE %, got % (%)',
            p_label, p_sqlstate, sqlstate, sqlerrm using errcode = 'P0001';
    end;
    raise exception 'assertion failed: %: expected SQLSTATE %, but it succeeded', p_label, p_sqlstate
        using errcode = 'P0001';
end
$$;

grant execute on all functions in schema tests to anon, authenticated, service_role;
