"""Provider SDK clients, optionally pointed at a local stand-in.

`api_base` of None means the real provider. Anything else (for example
`http://127.0.0.1:12111`) sends every request there instead: Stripe through the
SDK's own `base_addresses`, Twilio through its custom HTTP client hook.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import stripe
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client as TwilioClient


def make_stripe_client(
    secret_key: str,
    api_base: str | None = None,
    *,
    max_network_retries: int = 2,
    timeout: float | None = None,
) -> stripe.StripeClient:
    """A `StripeClient`; requests go to `api_base` when given (the stand-in)."""
    http_client = stripe.RequestsClient(timeout=timeout) if timeout is not None else None
    return stripe.StripeClient(
        secret_key,
        base_addresses={"api": api_base.rstrip("/")} if api_base else None,
        max_network_retries=max_network_retries,
        http_client=http_client,
    )


class RedirectingTwilioHttpClient(TwilioHttpClient):  # type: ignore[misc]
    """Sends requests meant for any `https://*.twilio.com` host to `api_base`, path kept."""

    def __init__(self, api_base: str, *, timeout: float | None = None) -> None:
        super().__init__(timeout=timeout)
        base = urlsplit(api_base)
        if not base.scheme or not base.netloc:
            raise ValueError(f"api_base must be an absolute URL, got {api_base!r}")
        self.api_base = base
        # The parent only mounts an adapter for https; plain http works with requests' defaults.

    def rewrite(self, url: str) -> str:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if host == "twilio.com" or host.endswith(".twilio.com"):
            prefix = self.api_base.path.rstrip("/")
            return urlunsplit(
                (
                    self.api_base.scheme,
                    self.api_base.netloc,
                    prefix + parts.path,
                    parts.query,
                    parts.fragment,
                )
            )
        return url

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        return super().request(
            method,
            self.rewrite(url),
            params=params,
            data=data,
            headers=headers,
            auth=auth,
            timeout=timeout,
            allow_redirects=allow_redirects,
        )


def make_twilio_client(
    account_sid: str,
    auth_token: str,
    api_base: str | None = None,
    *,
    username: str | None = None,
    timeout: float | None = None,
) -> TwilioClient:
    """A twilio-python `Client` for `account_sid`; requests go to `api_base` when given.

    `username` (an API key sid, with `auth_token` its secret) authenticates instead of
    the account sid, as `Client(key_sid, key_secret, account_sid)` does.
    """
    http_client: TwilioHttpClient = (
        RedirectingTwilioHttpClient(api_base, timeout=timeout)
        if api_base
        else TwilioHttpClient(timeout=timeout)
    )
    return TwilioClient(
        username or account_sid,
        auth_token,
        account_sid=account_sid,
        http_client=http_client,
    )
