"""`hrlaif run` config validation: every problem is one line naming the key, exit 2, before work."""
from __future__ import annotations

from dataclasses import replace

import pytest

from hrlaif.harness.config import QUICKSTART, RunConfig, load_config
from hrlaif.trainers.configs import PPOConfig, SFTConfig


def _run(run_cli, tmp_path, text: str):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    return run_cli("run", cfg, "--out", tmp_path / "run")


@pytest.mark.parametrize("text,needle", [
    ("ppo:\n  kl_cof: 0.1\n", "unknown config key 'ppo.kl_cof'"),
    ("bogus: 1\n", "unknown config key 'bogus'"),
    ("ppo:\n  kl_coef: high\n", "ppo.kl_coef: expected a number, got 'high'"),
    ("sample:\n  k: two\n", "sample.k: expected an integer, got 'two'"),
    ("label:\n  redteam: maybe\n", "label.redteam: expected true/false"),
    ("sft:\n  data: /no/such/file.json\n", "sft.data: file not found"),
    ("data_dir: /no/such/dir\n", "data_dir: directory not found"),
    ("sample:\n  k: 1\n", "sample.k: must be >= 2"),
    ("ppo:\n  zero_stage: 4\n", "ppo.zero_stage: must be one of 0, 1, 2, 3"),
    ("eval:\n  benchmarks: [mmlu, nope]\n", "unknown benchmark 'nope'"),
    ("judge:\n  url: http://127.0.0.1:9/v1\n  model: x\n", "judge.url"),
    ("ppo: [1, 2\n", "not valid YAML"),
])
def test_bad_config_is_one_line_exit_2(run_cli, tmp_path, text, needle):
    code, out, err = _run(run_cli, tmp_path, text)
    assert code == 2, (out, err)
    assert needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run" / "sft").exists(), "no work may start before validation passes"


def test_missing_config_file(run_cli, tmp_path):
    code, _, err = run_cli("run", tmp_path / "nope.yaml", "--out", tmp_path / "r")
    assert code == 2 and "config file not found" in err


def test_default_is_quickstart_and_partial_config_keeps_defaults(tmp_path):
    quick = load_config(None)  # hrlaif/harness/configs/quickstart.yaml over the defaults
    assert quick == load_config(QUICKSTART) != RunConfig()
    assert (quick.ppo.steps, quick.ppo.lr, quick.sft.max_steps, quick.eval.limit) == (8, 1e-5, 3, 12)
    f = tmp_path / "c.yaml"
    f.write_text("seed: 7\nppo:\n  steps: 3\n  kl_coef: 0.2\n")
    cfg = load_config(f)
    assert cfg.seed == 7 and cfg.ppo.steps == 3 and cfg.ppo.kl_coef == 0.2
    # every other setting has its dataclass default, the same as its `hrlaif <command>` flag
    assert cfg.ppo == replace(PPOConfig(), steps=3, kl_coef=0.2) and cfg.sft == SFTConfig()
    assert cfg.model is None and cfg.judge.url is None  # embedded model and judge


def test_pipeline_owned_keys_are_refused(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("ppo:\n  out: /tmp/x\n")
    with pytest.raises(Exception, match=r"^ppo.out is set by the pipeline, not in the run config$"):
        load_config(f)


def test_api_key_never_in_config(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("judge:\n  api_key: sk-secret\n")
    with pytest.raises(Exception, match="unknown config key 'judge.api_key'"):
        load_config(f)
