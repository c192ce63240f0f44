"""Keep a stand-in's state in a JSON file, so a restarted sandbox agrees with its database.

`up` gives each stand-in a file in its state directory; without one a
stand-in keeps its state in memory only.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def load(path: str | Path | None) -> dict[str, Any] | None:
    """The saved state, or None when there is no file (or no path)."""
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return None
    return data if isinstance(data, dict) else None


def save(path: str | Path | None, data: dict[str, Any]) -> None:
    """Write the state atomically: a crash leaves the old file or the new one."""
    if path is None:
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name, suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, default=str)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
