"""Moved to core.stats (the floor layer); this shim goes once every import is updated."""
from core.stats import *  # noqa: F401,F403
