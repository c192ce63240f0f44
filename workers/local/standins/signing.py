"""Webhook signatures exactly as Stripe and Twilio compute them.

- Stripe: header `Stripe-Signature: t=<unix>,v1=<hex>` where the hex is
  HMAC-SHA256(secret, f"{t}.{payload}") over the raw request body.
- Twilio: header `X-Twilio-Signature`, base64 HMAC-SHA1(auth_token, url + the
  form parameters sorted by name, each name followed by its value).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping


def stripe_signature(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The value of a `Stripe-Signature` header for `payload` signed with `secret`."""
    t = int(time.time()) if timestamp is None else timestamp
    signed = f"{t}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def twilio_signature(url: str, params: Mapping[str, str], auth_token: str) -> str:
    """The value of an `X-Twilio-Signature` header for a form POST of `params` to `url`."""
    data = url + "".join(f"{name}{params[name]}" for name in sorted(params))
    mac = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()
