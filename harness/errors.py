"""Moved to core.errors; kept while the layers move (see docs/ARCHITECTURE.md)."""
from core.errors import UserError  # noqa: F401
