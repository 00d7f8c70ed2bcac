"""Moved to core.allocator (the floor layer); this shim goes once every import is updated."""
from core.allocator import *  # noqa: F401,F403
