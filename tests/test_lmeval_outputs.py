"""lm-eval output dirs as evaluation dirs in `hrlaif compare` and `hrlaif gate` (hrlaif/reports/lmeval_output.py).

The slow test runs lm-eval's own CLI twice (two seeds, `--log_samples`, `--limit`) on the tiny random
model over local MMLU data (a task YAML whose documents come from hrlaif.evalsets.lmeval_docs, offline), and
`hrlaif eval` on the same items, then compares and gates the outputs. The expected numbers are
recomputed here from lm-eval's own files (its per-sample `acc`, its aggregate in results_*.json).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest

from hrlaif.core.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
N = 8
TASK = "hrlaif_mmlu_abstract_algebra"
TASK_YAML = """task: {task}
custom_dataset: !function glue.harness_dataset
dataset_kwargs: {{benchmark: mmlu, group: abstract_algebra, data_dir: "{data}"}}
output_type: multiple_choice
test_split: test
fewshot_split: dev
num_fewshot: 2
doc_to_text: "{{{{question.strip()}}}}\\nA. {{{{choices[0]}}}}\\nB. {{{{choices[1]}}}}\\n\\
  C. {{{{choices[2]}}}}\\nD. {{{{choices[3]}}}}\\nAnswer:"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: answer
metric_list: [{{metric: acc, aggregation: mean, higher_is_better: true}}]
metadata: {{version: 1.0}}
"""


def _lm_eval(model: Path, tasks: Path, out: Path, seed: int) -> subprocess.Popen:
    # A single-process DeepSpeed test earlier in the session leaves RANK/WORLD_SIZE/MASTER_* in os.environ;
    # lm-eval's accelerate would then wait for peers that never come.
    dist = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    env = {**{k: v for k, v in os.environ.items() if k not in dist}, "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(ROOT),
           "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={model},dtype=float32",
           "--tasks", TASK, "--include_path", str(tasks), "--limit", str(N), "--seed", str(seed),
           "--log_samples", "--output_path", str(out), "--batch_size", "4", "--device", "cpu"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, tiny_model_dir, shared_data, run_cli) -> dict:
    root = tmp_path_factory.mktemp("lmeval")
    data = root / "data" / "mmlu"
    for split in ("test", "dev"):  # one subject, linked (never copied) from the shared data
        (data / split).mkdir(parents=True)
        (data / split / f"abstract_algebra_{split}.csv").symlink_to(
            shared_data / "mmlu" / split / f"abstract_algebra_{split}.csv")
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "glue.py").write_text("from hrlaif.evalsets.lmeval_docs import harness_dataset  # noqa: F401\n")
    (tasks / "task.yaml").write_text(TASK_YAML.format(task=TASK, data=root / "data"))
    procs = {s: _lm_eval(tiny_model_dir, tasks, root / f"seed{s}", s) for s in (1, 2)}
    logs = {s: [] for s in procs}
    readers = [threading.Thread(target=lambda s=s: logs[s].append(procs[s].stdout.read())) for s in procs]
    for t in readers:
        t.start()
    # hrlaif eval on the same data and limit, meanwhile (the items: abstract_algebra/0..N-1)
    code, _, err = run_cli("eval", "--model", tiny_model_dir, "--benchmarks", "mmlu", "--limit", N,
                           "--data-dir", root / "data", "--out", root / "hrlaif_eval", "--no-use-cache")
    assert code == 0, err
    for s, p in procs.items():
        p.wait(timeout=600)
        readers[s - 1].join()
        assert p.returncode == 0, logs[s][0][-3000:]
    return {"seed1": root / "seed1", "seed2": root / "seed2", "hrlaif": root / "hrlaif_eval", "root": root}


def _lm_files(out: Path) -> tuple[dict, list[dict]]:
    (model_dir,) = [d for d in out.iterdir() if d.is_dir()]  # lm-eval nests the files in a model-name folder
    res = json.loads(next(model_dir.glob("results_*.json")).read_text())
    rows = [json.loads(line) for line in next(model_dir.glob(f"samples_{TASK}_*.jsonl")).read_text().splitlines()]
    return res, rows


@pytest.mark.slow
def test_compare_and_gate_two_lmeval_runs(outputs, tmp_path, run_cli):
    (r1, s1), (_, s2) = _lm_files(outputs["seed1"]), _lm_files(outputs["seed2"])
    assert len(s1) == len(s2) == N and {r["doc_id"] for r in s1} == set(range(N))
    acc1, acc2 = (sum(r["acc"] for r in s) / N for s in (s1, s2))
    assert acc1 == pytest.approx(r1["results"][TASK]["acc,none"])  # lm-eval's own aggregate
    assert [r["doc_hash"] for r in s1] == [r["doc_hash"] for r in s2]

    code, out, err = run_cli("compare", outputs["seed1"], outputs["seed2"], "--names", "seed1,seed2",
                             "--out", tmp_path / "cmp")
    assert code == 0, err
    long = pd.read_csv(tmp_path / "cmp" / "comparison_long.csv")
    row = long[(long.model == "seed2") & (long.bench == "mmlu")].iloc[0]
    diff = sum(b["acc"] - a["acc"] for a, b in zip(s1, s2)) / N
    assert row.n == N and row.n_paired == N and row.score == pytest.approx(acc2)
    assert row.delta == pytest.approx(diff, abs=1e-12) and row.delta_lo < diff < row.delta_hi
    assert f"| seed1 | {acc1 * 100:.1f}% [" in out and f"n={N}" in out

    # the gate: identical outputs on 8 items bound a deficit only at ~32 pt (z^2/(n+z^2))
    code, out, err = run_cli("gate", "--baseline", outputs["seed1"], "--candidate", outputs["seed2"],
                             "--out", tmp_path / "g1", "--junit", tmp_path / "j.xml")
    assert code == 1, err
    g = json.loads((tmp_path / "g1" / "gate.json").read_text())["benchmarks"]["mmlu"]
    assert g["n"] == N and g["baseline"] == pytest.approx(acc1) and g["candidate"] == pytest.approx(acc2)
    assert g["verdict"] == "fail" and f"n={N} can show non-inferiority only at a margin >=" in g["reason"]
    code, out, err = run_cli("gate", "--baseline", outputs["seed1"], "--candidate", outputs["seed2"],
                             "--out", tmp_path / "g2", "--margin", "mmlu=40")
    g = json.loads((tmp_path / "g2" / "gate.json").read_text())["benchmarks"]["mmlu"]
    assert g["diff"] == pytest.approx(diff) and code == (0 if g["bound_vs_margin"] > -0.40 else 1), out + err
    if diff == 0:  # the tiny random model picks the same letters whatever the few-shot examples
        assert code == 0 and g["verdict"] == "pass" and g["ci"][0] == pytest.approx(-g["min_margin"])


@pytest.mark.slow
def test_lmeval_dir_pairs_with_an_hrlaif_eval_dir(outputs, tmp_path, run_cli):
    """Mixed inputs: lm-eval on the harness's documents has the same item ids and doc hashes as
    `hrlaif eval` on the same data, so the two are paired item by item."""
    _, s1 = _lm_files(outputs["seed1"])
    ours = {json.loads(line)["doc_id"]: json.loads(line)
            for line in (outputs["hrlaif"] / "samples" / "mmlu.jsonl").read_text().splitlines()}
    assert set(ours) == {r["doc"]["doc_id"] for r in s1} == {f"abstract_algebra/{i}" for i in range(N)}
    assert all(ours[r["doc"]["doc_id"]]["doc_hash"] == r["doc_hash"] for r in s1)
    code, out, err = run_cli("compare", outputs["seed1"], outputs["hrlaif"], "--names", "lm-eval,hrlaif",
                             "--out", tmp_path / "cmp")
    assert code == 0, err
    long = pd.read_csv(tmp_path / "cmp" / "comparison_long.csv")
    row = long[(long.model == "hrlaif") & (long.bench == "mmlu")].iloc[0]
    diff = sum(ours[r["doc"]["doc_id"]]["score"] - r["acc"] for r in s1) / N
    assert row.n_paired == N and row.delta == pytest.approx(diff, abs=1e-12)
    code, _, err = run_cli("gate", "--baseline", outputs["seed1"], "--candidate", outputs["hrlaif"],
                           "--out", tmp_path / "g", "--margin", "mmlu=40")
    g = json.loads((tmp_path / "g" / "gate.json").read_text())["benchmarks"]["mmlu"]
    assert code in (0, 1) and g["n"] == N and g["diff"] == pytest.approx(diff), err


@pytest.mark.slow
def test_items_that_do_not_match_are_refused(outputs, tmp_path, run_cli):
    """Another document under the same doc_id, or a different item set: exit 2, one line."""
    other = tmp_path / "other"
    shutil.copytree(outputs["seed2"], other)
    (f,) = list(other.glob(f"*/samples_{TASK}_*.jsonl"))
    rows = [json.loads(line) for line in f.read_text().splitlines()]
    rows[3]["doc_hash"] = "0" * 64
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for cmd in (["compare", outputs["seed1"], other, "--out", tmp_path / "c"],
                ["gate", "--baseline", outputs["seed1"], "--candidate", other, "--out", tmp_path / "g"]):
        code, out, err = run_cli(*cmd)
        assert code == 2 and err.count("\n") == 1, err
        assert "mmlu: item abstract_algebra/3 of" in err and "different document" in err and "1 such items" in err
    f.write_text("".join(json.dumps(r) + "\n" for r in rows[:5]))  # a smaller --limit
    code, _, err = run_cli("compare", outputs["seed1"], other, "--out", tmp_path / "c2")
    assert code == 2 and "evaluated different items" in err and "(3 of its 8 missing, 0 extra)" in err


def test_task_names_map_to_benchmarks():
    from hrlaif.reports.lmeval_output import task_benchmark

    assert task_benchmark("mmlu_abstract_algebra")[:2] == ("mmlu", "abstract_algebra")
    assert task_benchmark("hrlaif_mmlu_college_physics")[:2] == ("mmlu", "college_physics")
    assert task_benchmark("gsm8k")[:2] == ("gsm8k", None)
    assert task_benchmark("arc_easy")[:2] == ("arc_easy", None)  # unknown tasks keep their name


def _fake_run(folder: Path, task: str, scores: list[float], stamp: str = "2026-01-01T00-00-00.0") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"results_{stamp}.json").write_text(json.dumps({
        "results": {task: {"alias": task, "acc,none": sum(scores) / len(scores), "acc_stderr,none": 0.1}},
        "higher_is_better": {task: {"acc": True}}, "config": {"limit": len(scores)}}))
    (folder / f"samples_{task}_{stamp}.jsonl").write_text("".join(
        json.dumps({"doc_id": i, "doc": {"q": i}, "filter": "none", "metrics": ["acc"], "doc_hash": f"h{i}",
                    "acc": s}) + "\n" for i, s in enumerate(scores)))


def test_layouts_and_unknown_tasks(tmp_path):
    """A nested model folder or the folder itself; an unknown task keeps its name; several models
    in one output dir are a one-line error; the newest results file wins."""
    from hrlaif.reports.collect import read_items, read_results

    _fake_run(tmp_path / "a" / "org__model", "arc_easy", [1, 0, 1, 1])
    res = read_results(tmp_path / "a")
    e = res["benchmarks"]["arc_easy"]
    assert e["score"] == 0.75 and e["n"] == 4 and e["metric"] == "acc" and e["ci95"][0] < 0.75 < e["ci95"][1]
    assert read_items(tmp_path / "a", "arc_easy") == {str(i): {"score": float(s), "doc_hash": f"h{i}", "group": None}
                                                       for i, s in enumerate([1, 0, 1, 1])}
    _fake_run(tmp_path / "a" / "org__model", "arc_easy", [0, 0, 0, 1], stamp="2026-02-01T00-00-00.0")
    assert read_results(tmp_path / "a")["benchmarks"]["arc_easy"]["score"] == 0.25
    _fake_run(tmp_path / "b", "arc_easy", [1, 1])
    assert read_results(tmp_path / "b")["benchmarks"]["arc_easy"]["n"] == 2
    _fake_run(tmp_path / "a" / "other__model", "arc_easy", [1])
    with pytest.raises(UserError, match="lm-eval outputs of several models .*org__model, other__model"):
        read_results(tmp_path / "a")
    (tmp_path / "c" / "m").mkdir(parents=True)
    (tmp_path / "c" / "m" / "results_2026.json").write_text(json.dumps({"results": {}}))
    with pytest.raises(UserError, match="run lm-eval with --log_samples"):
        read_results(tmp_path / "c")
