-- The local platform behaves as Supabase's: auth.uid(), auth.role(), auth.jwt().

select tests.clear_authentication();
select tests.assert_eq(auth.uid(), null::uuid, 'anon has no uid');
select tests.assert_eq(auth.role(), 'anon', 'anon role claim');
select tests.assert_eq(current_user::text, 'anon', 'anon is the current role');

select tests.reset_role();
select tests.authenticate_as('6f1c1f5e-7d3b-4c55-9d4e-2d0b8f1a0001');
select tests.assert_eq(auth.uid(), '6f1c1f5e-7d3b-4c55-9d4e-2d0b8f1a0001'::uuid, 'uid is the sub claim');
select tests.assert_eq(auth.role(), 'authenticated', 'role claim');
select tests.assert_eq(auth.jwt() ->> 'aud', 'authenticated', 'jwt returns the claims');
select tests.assert_eq(current_user::text, 'authenticated', 'authenticated is the current role');

select tests.reset_role();
select tests.authenticate_as_service_role();
select tests.assert_eq(auth.role(), 'service_role', 'service role claim');
select tests.assert_eq(auth.uid(), null::uuid, 'service role has no uid');

-- An empty setting (what PostgREST leaves after commit) reads as no user.
select tests.reset_role();
select set_config('request.jwt.claims', '', true);
select tests.assert_eq(auth.uid(), null::uuid, 'empty claims mean no uid');
