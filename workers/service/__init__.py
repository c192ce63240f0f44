"""What is deployed: the webhook service, the jobs, and what they share.

`app` routes Stripe and Twilio webhooks to one SQL function each
(`stripe_events`, `twilio_calls`); `jobs` runs the background work
(`auto_refill`, `twilio_jobs`); `db`, `settings`, `providers` and `logs` are
their database access, configuration, provider clients and log lines.
Nothing here imports `workers.local`.
"""
