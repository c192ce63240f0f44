"""`callbalance report`: the monitoring views of a running system, as tables or JSON."""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from psycopg import sql
from psycopg.rows import dict_row

from workers.ops.running import running_system
from workers.service.db import connect

# (view, title, columns shown in the terminal; None: all). --json always has every column.
VIEWS: list[tuple[str, str, list[str] | None]] = [
    (
        "balances",
        "Balances",
        ["email", "plan_id", "balance", "held_amount", "free_minutes_remaining", "status"],
    ),
    ("transactions", "Latest transactions", None),
    ("low_balances", "Low balances", ["email", "plan_id", "balance", "auto_refill_enabled"]),
    ("ledger_drift", "Ledger drift (must be empty)", None),
    ("refill_failures", "Refill failures", None),
    ("daily_revenue", "Revenue by day", None),
    ("minutes_by_day", "Minutes by day", None),
    ("operator_alerts", "Operator alerts (open)", ["created_at", "kind", "message", "user_id"]),
]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)[:40]
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    if not rows:
        return "  (none)"
    headers = [c for c in columns if c in rows[0]] if columns else list(rows[0].keys())
    cells = [[_cell(row[h]) for h in headers] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    lines = ["  " + "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  " + "  ".join("-" * w for w in widths))
    for row in cells:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    return "\n".join(lines)


def collect(database_url: str, user_email: str | None = None, limit: int = 50) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with connect(database_url, row_factory=dict_row) as conn:
        for view, _title, _ in VIEWS:
            query = sql.SQL("select * from monitoring.{} limit %s").format(sql.Identifier(view))
            out[view] = conn.execute(query, (limit,)).fetchall()
        if user_email:
            out["user"] = conn.execute(
                "select bt.created_at, bt.type, bt.reason, bt.amount, bt.balance_after, "
                "bt.description from public.balance_transactions bt "
                "join auth.users u on u.id = bt.user_id where u.email = %s "
                "order by bt.created_at desc, bt.id desc limit %s",
                (user_email, limit),
            ).fetchall()
    return out


def render(data: dict[str, Any]) -> str:
    parts = []
    for view, title, columns in VIEWS:
        parts.append(f"{title}\n{table(data[view], columns)}")
    if "user" in data:
        parts.append(f"Account history\n{table(data['user'])}")
    return "\n\n".join(parts)


def report_command(state_dir: Path, as_json: bool, user_email: str | None) -> int:
    """`callbalance report`: print the views; non-zero when a balance drifts from its ledger."""
    data = collect(running_system(state_dir)["database_url"], user_email)
    if as_json:
        print(json.dumps(data, default=str, indent=2))
    else:
        print(render(data))
    if data["ledger_drift"]:
        print("ledger drift found: balances differ from their ledgers", file=sys.stderr)
        return 1
    return 0
