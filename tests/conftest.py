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


def _pin_xdist_worker() -> None:
    """Under pytest-xdist, worker i of n keeps every n-th CPU of this process's set, before torch loads.

    torch's OpenMP pool, the embedded judge (its threads follow the affinity) and every subprocess a
    test starts inherit the set, so n workers never ask for more cores than there are: unpinned, two
    workers' thread pools fought over 2 cores and the suite got slower than one process."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not worker or not count or not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    mine = cpus[int(worker.removeprefix("gw")) % int(count)::int(count)] or cpus
    os.sched_setaffinity(0, mine)
    os.environ["OMP_NUM_THREADS"] = str(len(mine))


_pin_xdist_worker()

from hrlaif.core.hardware import hold_back_torch  # noqa: E402  (imports no torch)

hold_back_torch()  # HRLAIF_CPU_ISA=avx2 (.ci/run's second pass): torch dispatches as on an AVX2-only host

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
    from hrlaif.core.models import build_tiny_model
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def random_rm():
    """`random_rm(backbone_dir, out, seed)`: a reward model (the real RewardModel class) on the
    backbone with a seeded random head, saved to `out` with the tokenizer; returns `out`."""
    def save(backbone_dir, out: Path, seed: int, clip: float = 5.0) -> Path:
        import torch

        from hrlaif.trainers.models import RewardModel
        torch.manual_seed(seed)
        rm, tok, _ = RewardModel.from_backbone(str(backbone_dir), clip=clip)
        rm.save_pretrained(out)
        tok.save_pretrained(out)
        return out

    return save


@pytest.fixture(scope="session")
def tiny_rm_dir(tiny_model_dir, tmp_path_factory, random_rm) -> Path:
    """A reward model on the tiny backbone with a random head (PPO tests)."""
    return random_rm(tiny_model_dir, tmp_path_factory.mktemp("tiny_rm") / "rm", seed=3)


@pytest.fixture(scope="session")
def run_cli():
    """Run `hrlaif ...` in-process; returns (exit_code, stdout, stderr)."""
    import contextlib
    import io

    from hrlaif.harness.cli import main

    def _run(*argv: str):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in argv])
            except SystemExit as e:  # argparse usage errors
                code = e.code
        return code, out.getvalue(), err.getvalue()

    return _run


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """A random 2-label sequence classifier (label 1 = 'toxic') for the hf: classifier path."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    out = tmp_path_factory.mktemp("tinyclf") / "clf"
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, num_labels=2,
                      id2label={0: "benign", 1: "toxic"}, label2id={"benign": 0, "toxic": 1},
                      pad_token_id=tok.pad_token_id or tok.eos_token_id)
    LlamaForSequenceClassification(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


BROWSERS = ("chromium", "chromium-browser", "google-chrome")


@pytest.fixture(scope="session")
def chromium() -> str:
    """A headless browser for the report tests. Installed here when missing (Debian's package, as
    root), so the browser tests run rather than skip; anywhere else a missing browser fails loudly."""
    import shutil
    import subprocess

    found = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
            subprocess.run(cmd, env=env, capture_output=True, timeout=900)
        found = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if found is None:
        pytest.fail("no chromium for the HTML report tests: install Debian's `chromium` package "
                    "(.ci/run does); the tests do not skip without it")
    return found


CHAR_CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                      "{% if add_generation_prompt %}assistant: {% endif %}")


@pytest.fixture(scope="session")
def char_tokenizer():
    """A character-level tokenizer (printable ASCII, <pad>/<unk>/<eos>) with a plain chat template:
    a vocabulary unlike SmolLM2's, small enough that a tiny policy learns within a few PPO steps."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocab = {t: i for i, t in enumerate(["<pad>", "<unk>", "<eos>", *[chr(c) for c in range(32, 127)], "\n"])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>")
    tok.chat_template = CHAR_CHAT_TEMPLATE
    return tok


@pytest.fixture(scope="session")
def char_lm_dir(tmp_path_factory, char_tokenizer) -> Path:
    """A tiny random Llama on the character tokenizer (PPO learning tests)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    out = tmp_path_factory.mktemp("charlm") / "model"
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(char_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True, bos_token_id=None,
                      eos_token_id=char_tokenizer.eos_token_id, pad_token_id=char_tokenizer.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(out)
    char_tokenizer.save_pretrained(out)
    return out


# ------------------------------------------------------------------ host-dependent checks
# A check whose strongest form needs native bf16 (or another host feature) runs that form where the
# host has it and a cheaper equivalent elsewhere; either way it says what it proved on this host, and
# the session ends with that list (never a silent skip). Such tests carry `@pytest.mark.host`, which
# .ci/run runs a second time acting as an AVX2-only host (HRLAIF_CPU_ISA=avx2).
_HOST_PROOFS: list[tuple[str, str]] = []


@pytest.fixture
def host_proof(request):
    """`host_proof(text)`: record what this test proved on this host type (in its report, which
    pytest-xdist carries from the worker to the process that prints the summary)."""
    def say(text: str) -> None:
        request.node.user_properties.append(("host_proof", text))
    return say


def pytest_runtest_logreport(report):
    if report.when == "call":
        _HOST_PROOFS.extend((report.nodeid, text) for key, text in report.user_properties if key == "host_proof")


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per CPU this process may use, at most 4 (each loads torch and models)."""
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def pytest_terminal_summary(terminalreporter):
    if not _HOST_PROOFS:
        return
    from hrlaif.core.hardware import cpu_flags, host_isa
    flags = " ".join(sorted(f for f in cpu_flags() if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16")))
    terminalreporter.section(f"host-dependent checks (CPU flags seen: {flags or 'none'}; HRLAIF_CPU_ISA={host_isa()})")
    for nodeid, text in _HOST_PROOFS:
        terminalreporter.write_line(f"{nodeid}: {text}")
