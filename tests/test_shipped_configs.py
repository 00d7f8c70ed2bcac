"""Shipped run configs: `hrlaif run NAME` takes a shipped config's name or a file; the configs are
package data (a pip-installed wheel has them) and configs/ in a checkout links to the same files.
(`--dry-run` of every shipped config: tests/test_run_judging.py.)"""
from __future__ import annotations

import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

from hrlaif.core.errors import UserError
from hrlaif.harness.config import SHIPPED, config_path, load_config, shipped_configs

ROOT = Path(__file__).resolve().parents[1]


def test_names_and_paths_resolve(tmp_path):
    assert shipped_configs() == ["overoptimise", "paper-7b", "quickstart"]
    assert config_path(None) == config_path("quickstart") == SHIPPED / "quickstart.yaml"
    assert config_path("paper-7b") == SHIPPED / "paper-7b.yaml"
    mine = tmp_path / "paper-7b"  # a file of that name wins over the shipped config
    mine.write_text("seed: 7\n")
    assert config_path(str(mine)) == mine and load_config(str(mine)).seed == 7
    with pytest.raises(UserError, match=r"config not found: paper-70b is neither a file nor a shipped config "
                                         r"\(overoptimise, paper-7b, quickstart\)"):
        config_path("paper-70b")
    shipped = r"\(shipped configs: overoptimise, paper-7b, quickstart\)"
    with pytest.raises(UserError, match=r"config file not found: nope.yaml " + shipped):
        config_path("nope.yaml")


def test_paper_config_is_paper_scale():
    cfg = load_config("paper-7b")
    assert cfg.model == "Qwen/Qwen2.5-7B-Instruct"
    assert cfg.judge.url.startswith("https://") and cfg.judge.key_env == "OPENAI_API_KEY"
    assert cfg.judge.price_per_1k_prompt_tokens and cfg.judge.price_per_1k_completion_tokens
    assert cfg.eval_judge.model == cfg.judge.model  # inherited
    assert cfg.eval.hub and cfg.eval.limit is None
    assert {cfg.sft.zero_stage, cfg.reward_model.zero_stage, cfg.ppo.zero_stage} == {3}
    assert cfg.ppo.batch_size % 8 == 0 and cfg.ppo.mini_batch_size % 8 == 0  # 8 ranks


def test_configs_are_package_data_and_linked_from_configs_dir():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["hrlaif.harness"]
    for name in shipped_configs():
        rel = f"configs/{name}.yaml"
        assert any(fnmatch(rel, pat) for pat in data), rel
        link = ROOT / "configs" / f"{name}.yaml"
        assert link.resolve() == (SHIPPED / f"{name}.yaml").resolve(), link


def test_overoptimise_config_over_optimises_on_a_benchmark_with_headroom():
    """bench/overoptimise.py's settings: no KL penalty, every block, drift on MMLU cloze with gold verdicts."""
    cfg = load_config("overoptimise")
    assert cfg.ppo.kl_coef == 0 and not cfg.ppo.adaptive_kl and cfg.ppo.train_layers == 0
    assert cfg.ppo.drift_benchmarks == ["mmlu_cloze"] and cfg.ppo.drift_every and cfg.ppo.heldout_limit


def test_unknown_config_name_is_one_line(run_cli):
    code, out, err = run_cli("run", "paper-70b", "--dry-run")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "neither a file nor a shipped config" in lines[0]
