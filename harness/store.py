"""Moved to core.store (the floor layer); this shim goes once every import is updated."""
from core.store import *  # noqa: F401,F403
