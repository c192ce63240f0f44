"""Run a stand-in: `python -m workers.local.standins stripe|twilio [options]`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from workers.local.standins import stripe as stripe_standin
from workers.local.standins import twilio as twilio_standin
from workers.local.standins.serving import StandinServer


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _state_file(state_dir: str | None, which: str) -> str | None:
    return str(Path(state_dir) / f"{which}-standin.json") if state_dir else None


def build(argv: Sequence[str] | None = None) -> StandinServer:
    """Parse the command line into a (not yet started) server."""
    parser = argparse.ArgumentParser(
        prog="python -m workers.local.standins", description="Local Stripe / Twilio API stand-ins."
    )
    sub = parser.add_subparsers(dest="which", required=True)

    stripe_p = sub.add_parser("stripe", help="the Stripe API stand-in")
    stripe_p.add_argument("--host", default="127.0.0.1")
    stripe_p.add_argument("--port", type=int, default=12111)
    stripe_p.add_argument("--webhook-url", default="", help="comma-separated endpoint URLs")
    stripe_p.add_argument("--webhook-secret", default="whsec_standin")
    stripe_p.add_argument(
        "--api-key", default=None, help="the only key accepted (default: any sk_test_)"
    )
    stripe_p.add_argument("--public-url", default=None, help="base URL used in checkout links")
    stripe_p.add_argument(
        "--retry-delays",
        default="1,5,30,120,600",
        help="seconds before each webhook retry, comma-separated",
    )

    twilio_p = sub.add_parser("twilio", help="the Twilio REST API stand-in")
    twilio_p.add_argument("--host", default="127.0.0.1")
    twilio_p.add_argument("--port", type=int, default=12112)
    twilio_p.add_argument("--account-sid", required=True)
    twilio_p.add_argument("--auth-token", required=True)
    twilio_p.add_argument("--api-key-sid", default=None)
    twilio_p.add_argument("--api-key-secret", default=None)
    for sub_p in (stripe_p, twilio_p):
        sub_p.add_argument(
            "--state-dir",
            default=None,
            help="keep the stand-in's state in this directory between runs (default: memory)",
        )

    args = parser.parse_args(argv)
    if args.which == "stripe":
        config = stripe_standin.StripeStandinConfig(
            webhook_urls=_split(args.webhook_url),
            webhook_secret=args.webhook_secret,
            api_key=args.api_key,
            public_url=args.public_url,
            retry_delays=[float(x) for x in _split(args.retry_delays)],
            state_file=_state_file(args.state_dir, "stripe"),
        )
        app = stripe_standin.create_app(config=config)
    else:
        twilio_config = twilio_standin.TwilioStandinConfig(
            account_sid=args.account_sid,
            auth_token=args.auth_token,
            api_keys=(
                {args.api_key_sid: args.api_key_secret}
                if args.api_key_sid and args.api_key_secret
                else {}
            ),
            state_file=_state_file(args.state_dir, "twilio"),
        )
        app = twilio_standin.create_app(config=twilio_config)
    return StandinServer(app, args.host, args.port, log_level="info")


def main(argv: Sequence[str] | None = None) -> int:
    server = build(argv)
    print(f"stand-in on {server.base_url}", file=sys.stderr, flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
