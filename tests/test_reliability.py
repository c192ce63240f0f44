"""The 60-second fault run: `callbalance up` under kills, lost and repeated webhooks and
provider failures, with every user's money checked against what Stripe and Twilio saw.

`python -m reliability.faults --duration 600` runs the same for longer.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reliability.faults import run

pytestmark = pytest.mark.slow


def test_money_is_conserved_under_faults(tmp_path: Path) -> None:
    report = run(duration=60, users=16, seed=20261121, state_dir=tmp_path, echo=lambda _: None)
    print(report.render())
    assert sum(report.faults.values()) > 0, "the nemesis injected nothing"
    assert report.ops["call"]["ok"] > 0 and report.ops["top-up"]["ok"] > 0
    assert not report.harness_errors, report.harness_errors
    assert report.violations == 0, report.render()
