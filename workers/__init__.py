"""Call Balance: the service side of a prepaid wallet for AI call minutes."""

__version__ = "0.1.0"
