"""Call Balance: the service side of a prepaid wallet for AI call minutes."""

__version__ = "0.1.0"


class CommandError(RuntimeError):
    """A failure a `callbalance` command reports in one line before it exits with status 1."""
