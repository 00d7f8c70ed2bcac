"""Declared dependencies that tests import through tests/declared.py are declared and importable."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from declared import DECLARED, require

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


@pytest.mark.parametrize("module", sorted(DECLARED))
def test_declared_dependency_is_in_pyproject_and_importable(module):
    deps = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["dependencies"]
    assert DECLARED[module] in deps, f"{DECLARED[module]!r} is not in pyproject.toml dependencies"
    assert require(module).__name__ == module


def test_require_fails_instead_of_skipping(monkeypatch):
    monkeypatch.setitem(DECLARED, "hrlaif_no_such_module", "hrlaif-no-such-dist")
    with pytest.raises(pytest.fail.Exception, match="declared dependency.*install is broken"):
        require("hrlaif_no_such_module")
