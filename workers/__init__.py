"""Call Balance: the Python side of a prepaid wallet for AI call minutes.

Three parts: `service` is deployed (webhooks, jobs), `local` exists only on
one machine (`up`, the embedded Postgres, the platform script, the provider
stand-ins), and `ops` holds the operator's commands; `cli` dispatches to
them. The service never imports `local`.
"""

__version__ = "0.1.0"


class CommandError(RuntimeError):
    """A failure a `callbalance` command reports in one line before it exits with status 1."""
