"""Moved to core.models (the floor layer); this shim goes once every import is updated."""
from core.models import *  # noqa: F401,F403
