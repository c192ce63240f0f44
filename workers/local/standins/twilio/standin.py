"""The Twilio stand-in: one account with its numbers and calls."""

from __future__ import annotations

from workers.local.standins.twilio.calls import Calls


class TwilioStandin(Calls):
    """In-memory Twilio account: owned numbers, calls, injected failures."""
