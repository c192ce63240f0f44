"""Proof under fire: fault injection against `callbalance up`, with the money checked after.

- `reliability.running`: start `callbalance up` on free ports, find and kill its
  processes, restart its Postgres.
- `reliability.workload`: users doing what users do, through the same doors
  (Edge Functions, PostgREST-style RPC sessions, Stripe's hosted checkout,
  Twilio's calls), with a record of what the outside world did.
- `reliability.nemesis`: the faults.
- `reliability.checks`: the invariants, checked against the providers' records.
- `reliability.faults`: the command that runs it all and prints the table.
"""
