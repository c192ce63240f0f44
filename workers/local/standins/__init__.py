"""Local stand-ins for the Stripe and Twilio HTTP APIs.

Each stand-in is an ASGI app (`stripe.create_app`, `twilio.create_app`)
keeping its state in memory, or in a file of the state directory
(`persist`). `serving` holds what both serve alike and the server that runs
them; `signing` signs webhooks as Stripe and Twilio do; `python -m
workers.local.standins stripe|twilio` runs one alone.
"""
