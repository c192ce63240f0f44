"""Which system an operator's command talks to: `DATABASE_URL`, else what `up` started."""

from __future__ import annotations

import os
from pathlib import Path

from workers.local.up import LOCAL_JWT_SECRET, read_state


def running_system(state_dir: Path) -> dict[str, str]:
    """The URLs of the system `callbalance up` started, or the environment's."""
    if os.environ.get("DATABASE_URL"):
        return {
            "database_url": os.environ["DATABASE_URL"],
            "jwt_secret": os.environ.get("SUPABASE_JWT_SECRET", LOCAL_JWT_SECRET),
        }
    return read_state(state_dir)
