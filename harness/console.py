"""Moved to core.console (the floor layer); this shim goes once every import is updated."""
from core.console import *  # noqa: F401,F403
