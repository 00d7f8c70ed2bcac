"""`report_to` (hrlaif/core/trackers.py): TensorBoard, MLflow (a local file store) and W&B (offline mode)
receive each stage's per-step metrics, PPO's drift evaluations and final results with their CIs;
read back here through each tracker's own reader. A tracker whose library is missing is a one-line
error, exit 2."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_ppo import _fake_eval_factory, write_prompts


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _tb_scalars(tb_dir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(tb_dir))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def _mlflow_run(uri: str, name: str):
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("hrlaif")
    (run,) = [r for r in client.search_runs([exp.experiment_id]) if r.info.run_name == name]
    history = lambda key: [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, key),  # noqa: E731
                                                            key=lambda m: m.step)]
    return run, history


def test_ppo_reports_to_tensorboard_and_mlflow(tiny_model_dir, tiny_rm_dir, tmp_path, monkeypatch):
    """`report_to: [tensorboard, mlflow]` on a short PPO run: both hold every step's metrics and the
    drift evaluations (score, 95% CI bounds and n per benchmark), equal to metrics.jsonl / drift.jsonl."""
    from hrlaif.trainers.configs import PPOConfig
    from hrlaif.trainers.ppo import train

    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    out = tmp_path / "run"
    cfg = PPOConfig(model=str(tiny_model_dir), reward_model=str(tiny_rm_dir), out=str(out),
                    prompts=str(write_prompts(tmp_path / "p.jsonl", 4)), steps=2, batch_size=2, mini_batch_size=2,
                    ppo_epochs=1, max_new_tokens=4, seed=3, save_every=0, drift_every=1, drift_benchmarks=["gsm8k"],
                    drift_limit=2, heldout_prompts=str(write_prompts(tmp_path / "h.jsonl", 2, start=50)),
                    report_to=["tensorboard", "mlflow"])
    train(cfg, evaluate_fn=_fake_eval_factory([]))
    logged, drift = _rows(out / "metrics.jsonl"), _rows(out / "drift.jsonl")
    assert [r["step"] for r in logged] == [1, 2] and [d["step"] for d in drift] == [0, 1, 2]
    run, history = _mlflow_run(uri, "run")
    assert run.info.status == "FINISHED" and run.data.params["steps"] == "2" and run.data.tags["stage"] == "ppo"
    for key in ("reward_raw", "kl", "policy_loss", "value_loss"):
        expect = [(r["step"], pytest.approx(r[key], rel=1e-6, abs=1e-9)) for r in logged]
        assert history(f"ppo/{key}") == expect, key
        assert _tb_scalars(out / "tb", f"ppo/{key}") == expect, key
    for key, field in (("drift/reward_heldout", "reward_heldout"), ("drift/kl", "kl")):
        expect = [(d["step"], pytest.approx(d[field], rel=1e-6, abs=1e-9)) for d in drift]
        assert history(key) == expect and _tb_scalars(out / "tb", key) == expect, key
    # the fake drift benchmark: 0.25 [0.1, 0.5], n = 2, at each drift step
    for key, value in (("score", 0.25), ("ci_lo", 0.1), ("ci_hi", 0.5), ("n", 2)):
        expect = [(s, pytest.approx(value)) for s in (0, 1, 2)]
        assert history(f"drift/gsm8k/{key}") == expect and _tb_scalars(out / "tb", f"drift/gsm8k/{key}") == expect


def test_sft_reports_to_wandb_offline(tiny_model_dir, tmp_path, monkeypatch):
    """W&B in offline mode: the run file holds the config and every step's loss (the record format
    is W&B's own protobuf log, so the values are looked up as the strings W&B encodes them as)."""
    from hrlaif.trainers.sft import SFTConfig, train_sft

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    data = tmp_path / "d.json"
    data.write_text(json.dumps([{"instruction": f"Say {w}.", "input": "", "output": f"{w} {w}."}
                                for w in ("one", "two", "three", "four")]))
    out = train_sft(SFTConfig(model=str(tiny_model_dir), data=str(data), out=str(tmp_path / "sft"), batch_size=2,
                              epochs=2, max_steps=3, max_len=64, seed=0, report_to=["wandb"]))
    (run_file,) = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    blob = run_file.read_bytes()
    for text in ("sft/loss", "sft/lr", "max_steps", *(repr(r["loss"]) for r in _rows(out / "metrics.jsonl"))):
        assert text.encode() in blob, text
    assert len(_rows(out / "metrics.jsonl")) == 3


def test_reward_model_reports_steps_and_heldout_accuracy(tiny_model_dir, tmp_path, monkeypatch):
    """train-rm with report_to mlflow: every step's loss and pair accuracy, and the held-out accuracy
    with its clustered 95% CI and n, as in metrics.jsonl and rm_metrics.json."""
    from test_reward_model import _synthetic_labels

    from hrlaif.trainers.configs import RMConfig
    from hrlaif.trainers.reward_model import train_reward_model

    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    _synthetic_labels(tmp_path / "labels.jsonl", n_prompts=10)
    out = train_reward_model(RMConfig(model=str(tiny_model_dir), labels=str(tmp_path / "labels.jsonl"),
                                      out=str(tmp_path / "rm"), max_steps=3, groups_per_step=2, seed=3, max_len=64,
                                      precision="fp32", report_to=["mlflow"]))
    steps, m = _rows(out / "metrics.jsonl"), json.loads((out / "rm_metrics.json").read_text())["heldout_acc"]
    run, history = _mlflow_run(uri, "rm")
    assert run.data.tags["stage"] == "reward_model" and run.info.status == "FINISHED"
    for key in ("loss", "pair_acc"):
        assert history(f"rm/{key}") == [(r["step"], pytest.approx(r[key], rel=1e-6)) for r in steps]
    for key, value in (("score", m["score"]), ("ci_lo", m["ci95"][0]), ("ci_hi", m["ci95"][1]), ("n", m["n"])):
        assert history(f"rm/heldout_acc/{key}") == [(0, pytest.approx(value))]


def test_eval_final_results_with_cis(tiny_model_dir, tmp_path, monkeypatch, run_cli):
    """`hrlaif eval --report-to mlflow,tensorboard`: each benchmark's score, CI bounds and n, as in results.json."""
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    out = tmp_path / "ev"
    code, _, err = run_cli("eval", "--model", tiny_model_dir, "--benchmarks", "mmlu", "--limit", "4", "--out", out,
                           "--report-to", "mlflow,tensorboard", "--no-use-cache")
    assert code == 0, err
    e = json.loads((out / "results.json").read_text())["benchmarks"]["mmlu"]
    run, history = _mlflow_run(uri, "ev")
    assert run.data.tags["stage"] == "eval"
    for key, value in (("score", e["score"]), ("ci_lo", e["ci95"][0]), ("ci_hi", e["ci95"][1]), ("n", 4)):
        assert history(f"eval/mmlu/{key}") == [(0, pytest.approx(value))]
        assert [v for _, v in _tb_scalars(out / "tb", f"eval/mmlu/{key}")] == [pytest.approx(value)]


def test_a_missing_extra_is_one_line(tmp_path):
    """Without the wandb package: `--report-to wandb` names the extra to install, exit 2, no traceback;
    'none' with a tracker is refused the same way."""
    code = ("import sys; sys.modules['wandb'] = None\n"
            "from hrlaif.harness.cli import main\n"
            f"sys.exit(main(['sft', '--out', {str(tmp_path / 'o')!r}, '--report-to', sys.argv[1]]))")
    for value, message in (("tensorboard,wandb", "hrlaif sft: error: --report-to: wandb is not installed: "
                                                 "pip install 'hrlaif-harness[wandb]'"),
                           ("none,mlflow", "hrlaif sft: error: --report-to: 'none' cannot be combined with "
                                           "trackers (got none, mlflow)")):
        r = subprocess.run([sys.executable, "-c", code, value], capture_output=True, text=True, timeout=120,
                           cwd=Path(__file__).resolve().parents[1])
        assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == message, r.stderr
        assert "Traceback" not in r.stderr and not (tmp_path / "o").exists()
