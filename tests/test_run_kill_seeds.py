"""`kill -9` of `hrlaif run --seeds 1,2` during seed 2's PPO, then `--resume`: every stage before it
(the shared SFT, samples and labels, both seeds' reward models, seed 1's PPO) is reused, and seed
2's PPO continues from its last checkpoint. Tiny model, scripted judge (tests/fake_judge.py)."""
from __future__ import annotations

import json
import time

import pytest

from hrlaif.harness.config import load_config, with_seeds
from hrlaif.harness.stages import stage_names
from tests.fake_judge import FakeJudge
from tests.test_run_kill import Run, _env

pytestmark = pytest.mark.slow


def test_kill_9_in_seed_2_ppo_then_resume_continues_it(tiny_model_dir, tmp_path):
    t0 = time.time()
    with FakeJudge(mode="smart") as fj:
        cfg = tmp_path / "tiny.yaml"
        cfg.write_text(f"""
model: {tiny_model_dir}
seed: 3
judge: {{url: "{fj.url}", model: fake, key_env: null, workers: 1}}
sft: {{max_steps: 1, batch_size: 2, max_len: 64}}
sample: {{limit: 4, k: 2, max_new_tokens: 8, batch_size: 4}}
label: {{hh_limit: 0, redteam: false}}
reward_model: {{epochs: 1, max_len: 64, heldout_frac: 0.34, groups_per_step: 2}}
ppo: {{steps: 4, batch_size: 2, mini_batch_size: 2, max_new_tokens: 8, save_every: 1, drift_every: 0,
       train_layers: 0}}
eval: {{benchmarks: [mmlu], limit: 3}}
""")
        (tmp_path / "logs").mkdir()
        run = Run(cfg, tmp_path / "run", _env(tmp_path / "cache"), tmp_path / "logs")
        names = stage_names(with_seeds(load_config(cfg), "1,2"))
        ppo = run.out / "ppo_rlaif_s2"
        run.kill_when(lambda: run.running("ppo_rlaif_s2") and (ppo / "checkpoints" / "latest").exists(),
                      "--seeds", "1,2")
        assert run.running("ppo_rlaif_s2")
        at = int((ppo / "checkpoints" / "latest").read_text().strip().split("_")[1])
        before = {s: (run.out / s / "manifest.json").read_text() for s in names[:names.index("ppo_rlaif_s2")]
                  if (run.out / s / "manifest.json").exists()}
        assert {"sft", "rm_basic_s2", "ppo_rlaif", "ppo_hrlaif"} <= set(before)
        out = run.finish("--seeds", "1,2", "--resume")
        for stage, text in before.items():  # reused untouched
            assert f"{stage:<12} skipped (unchanged)" in out, stage
            assert (run.out / stage / "manifest.json").read_text() == text, stage
        assert "ppo_rlaif_s2 was interrupted: continuing from its partial state" in out
        assert f"resumed_from_step {at}" in out
        sessions = [json.loads(x) for x in (ppo / "sessions.jsonl").read_text().splitlines()]
        assert [s["resumed_from_step"] for s in sessions] == [None, at]
        assert [json.loads(x)["step"] for x in (ppo / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
        # seed 2's PPO is its own training: another seed than seed 1's, the same SFT model and labels
        m1, m2 = (json.loads((run.out / s / "manifest.json").read_text()) for s in ("ppo_rlaif", "ppo_rlaif_s2"))
        assert (m1["config"]["ppo"]["seed"], m2["config"]["ppo"]["seed"]) == (1, 2)
        assert all(json.loads((run.out / s / "manifest.json").read_text())["status"] == "done"
                   for s in names if s != "redteam")
        md = (run.out / "report" / "report.md").read_text(encoding="utf-8")
        assert "RLAIF seed 2" in md and "2 training seeds per variant" in md
    print(f"seed-2 kill/resume: {time.time() - t0:.0f}s over {run.n} `hrlaif run` processes")
