"""What exists only on one machine: what replaces Supabase, Stripe and Twilio there.

`up` starts and supervises the whole system, `embedded_pg` runs PostgreSQL
from the `pgserver` wheel, `platform` applies what Supabase provides and a
plain Postgres lacks (`platform.sql`), and `standins` serves local Stripe and
Twilio APIs. Never deployed: the service must not import it.
"""
