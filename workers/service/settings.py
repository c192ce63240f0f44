"""Settings of the worker service and jobs: one typed object read from the environment.

Validated at start-up; a missing or malformed variable is named in the error.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from workers import CommandError

DEFAULT_SERVE_PORT = 54330


class SettingsError(CommandError):
    """The environment does not describe a runnable service."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    database_url: str = Field(min_length=1)
    # A session connection (direct, or Supabase's session mode on port 5432) for LISTEN;
    # DATABASE_URL may be a transaction-mode pooler, which cannot keep a LISTEN.
    database_session_url: str | None = None
    public_url: str = Field(min_length=1)

    stripe_secret_key: str = Field(min_length=1)
    stripe_webhook_secret: Annotated[list[str], NoDecode] = Field(min_length=1)
    stripe_api_base: str | None = None

    twilio_account_sid: str = Field(min_length=1)
    twilio_auth_token: str = Field(min_length=1)
    twilio_api_base: str | None = None
    twilio_inbound_dial: str | None = None
    twilio_caller_id: str | None = None
    twilio_twiml_app_sid: str | None = None
    twilio_api_key_sid: str | None = None
    twilio_api_key_secret: str | None = None

    db_pool_size: int = Field(default=10, ge=1, le=100)

    @field_validator("stripe_webhook_secret", mode="before")
    @classmethod
    def _split_secrets(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("stripe_webhook_secret")
    @classmethod
    def _check_secrets(cls, value: list[str]) -> list[str]:
        for secret in value:
            if not secret.startswith("whsec_"):
                raise ValueError("each secret starts with whsec_")
        return value

    @field_validator("stripe_secret_key")
    @classmethod
    def _check_key(cls, value: str) -> str:
        if not re.fullmatch(r"(sk|rk)_(test|live)_[A-Za-z0-9_]+", value):
            raise ValueError("a Stripe secret key looks like sk_test_… or sk_live_…")
        return value

    @field_validator("twilio_account_sid")
    @classmethod
    def _check_sid(cls, value: str) -> str:
        if not re.fullmatch(r"AC[0-9a-fA-F]{32}", value):
            raise ValueError("a Twilio account sid is AC followed by 32 hex digits")
        return value

    @field_validator("public_url", "stripe_api_base", "twilio_api_base")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.fullmatch(r"https?://[^\s/]+(/[^\s]*)?", value):
            raise ValueError("an absolute http(s) URL")
        return value.rstrip("/")

    @property
    def stripe_is_live(self) -> bool:
        return self.stripe_secret_key.startswith(("sk_live_", "rk_live_"))


def load_settings(**overrides: object) -> Settings:
    """Read the environment; raise SettingsError naming each bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = str(error["loc"][0]).upper() if error["loc"] else "?"
            if error["type"] == "missing":
                problems.append(f"{name} is not set")
            else:
                problems.append(f"{name} is malformed: {error['msg']}")
        raise SettingsError("; ".join(problems)) from None
