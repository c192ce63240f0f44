"""`callbalance user create`: a local user and a signed JWT, to try the Edge Functions."""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import jwt

from workers.ops.running import running_system
from workers.service.db import connect


def create_user(database_url: str, email: str, plan: str | None, jwt_secret: str) -> dict[str, Any]:
    meta = json.dumps({"plan": plan} if plan else {})
    with connect(database_url) as conn:
        if plan is not None:
            known = conn.execute("select 1 from public.billing_plans where id = %s", (plan,))
            if known.fetchone() is None:
                raise ValueError(f"unknown plan {plan!r}")
        row = conn.execute(
            "insert into auth.users (email, raw_app_meta_data) values (%s, %s) "
            "on conflict (email) do nothing returning id",
            (email, meta),
        ).fetchone()
        if row is None:
            raise ValueError(f"a user with email {email} exists already")
    user_id = uuid.UUID(str(row[0]))
    now = int(time.time())
    token = jwt.encode(
        {
            "sub": str(user_id),
            "email": email,
            "role": "authenticated",
            "aud": "authenticated",
            "iat": now,
            "exp": now + 24 * 3600,
        },
        jwt_secret,
        algorithm="HS256",
    )
    return {"id": str(user_id), "email": email, "plan": plan, "jwt": token}


def create_user_command(state_dir: Path, email: str, plan: str | None) -> int:
    """Print the new user and its JWT as JSON; exit 1 for an unknown plan or a taken email."""
    state = running_system(state_dir)
    try:
        user = create_user(state["database_url"], email, plan, state["jwt_secret"])
    except ValueError as exc:
        print(f"callbalance: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(user, indent=2))
    return 0
