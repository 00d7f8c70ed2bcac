"""Shared fixtures. Nothing here touches the network: HF_HUB_OFFLINE is forced on."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory) -> Path:
    """Keep the converted embedded model across tests (and across runs, if HRLAIF_CACHE is set)."""
    return Path(os.environ.get("HRLAIF_CACHE") or Path.home() / ".cache" / "hrlaif")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, cache_root) -> Path:
    """A ~0.4M-parameter random Llama with the embedded SmolLM2 tokenizer and chat template."""
    from harness.models import build_tiny_model
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture()
def run_cli(monkeypatch):
    """Run `hrlaif ...` in-process; returns (exit_code, stdout, stderr)."""
    import contextlib
    import io

    from harness.cli import main

    def _run(*argv: str):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in argv])
            except SystemExit as e:  # argparse usage errors
                code = e.code
        return code, out.getvalue(), err.getvalue()

    return _run
