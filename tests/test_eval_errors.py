"""Every bad input of `hrlaif eval` gives one line naming the problem and exit code 2."""
from __future__ import annotations

import subprocess
import sys


def _check(result, *needles):
    code, out, err = result
    assert code == 2, (out, err)
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1, err  # one line, no traceback
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


def test_unknown_benchmark(run_cli):
    _check(run_cli("eval", "--benchmarks", "mmlu,bogus"), "unknown benchmark 'bogus'")


def test_limit_zero(run_cli):
    _check(run_cli("eval", "--limit", "0"), "--limit")


def test_missing_data_dir(run_cli, tmp_path):
    _check(run_cli("eval", "--data-dir", tmp_path / "nope", "--benchmarks", "mmlu"), "data dir not found")


def test_empty_data_dir(run_cli, tmp_path):
    (tmp_path / "empty").mkdir()
    _check(run_cli("eval", "--data-dir", tmp_path / "empty", "--benchmarks", "mmlu"), "data dir is empty")


def test_data_dir_without_benchmark(run_cli, tmp_path):
    (tmp_path / "d" / "gsm8k").mkdir(parents=True)
    (tmp_path / "d" / "gsm8k" / "test.jsonl").write_text('{"question": "q", "answer": "#### 1"}\n')
    _check(run_cli("eval", "--data-dir", tmp_path / "d", "--benchmarks", "mmlu"), "no mmlu data under")


def test_csv_wrong_columns(run_cli, tmp_path):
    d = tmp_path / "d" / "mmlu" / "test"
    d.mkdir(parents=True)
    (d / "algebra_test.csv").write_text("What is 1+1?,1,2,3\n")
    _check(run_cli("eval", "--data-dir", tmp_path / "d", "--benchmarks", "mmlu"), "algebra_test.csv:1", "6 columns")


def test_ceval_missing_header_column(run_cli, tmp_path):
    d = tmp_path / "d" / "ceval" / "val"
    d.mkdir(parents=True)
    (d / "law_val.csv").write_text("id,question,A,B,C,D\n0,q,a,b,c,d\n")
    _check(run_cli("eval", "--data-dir", tmp_path / "d", "--benchmarks", "ceval"), "missing column", "answer")


def test_non_utf8(run_cli, tmp_path):
    d = tmp_path / "d" / "gsm8k"
    d.mkdir(parents=True)
    (d / "test.jsonl").write_bytes('{"question": "caf\xe9", "answer": "#### 1"}\n'.encode("latin-1"))
    _check(run_cli("eval", "--data-dir", tmp_path / "d", "--benchmarks", "gsm8k"), "not UTF-8")


def test_bad_model_path(run_cli, tmp_path):
    _check(run_cli("eval", "--model", tmp_path / "no_model_here", "--benchmarks", "mmlu", "--limit", "1"),
           "model path not found")


def test_model_dir_without_config(run_cli, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "x.txt").write_text("x")
    _check(run_cli("eval", "--model", tmp_path / "m", "--benchmarks", "mmlu", "--limit", "1"), "no config.json")


def test_unparseable_completions(run_cli, tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text('{"task_id": "HumanEval/0", "completion": "  return 1"}\nnot json\n')
    _check(run_cli("eval", "--completions", f), "c.jsonl", "2")


def test_completions_unknown_task(run_cli, tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text('{"task_id": "HumanEval/99999", "completion": "  return 1"}\n')
    _check(run_cli("eval", "--completions", f), "HumanEval/99999")


def test_completions_for_a_kind_that_cannot_score_them(run_cli, tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text('{"task_id": "HumanEval/0", "completion": "  return 1"}\n')
    _check(run_cli("eval", "--completions", f, "--benchmarks", "mmlu,humaneval", "--out", tmp_path / "o"),
           "execute benchmarks only, not mmlu")
    assert not (tmp_path / "o").exists()  # refused before any data was read or written


def test_real_console_script_exit_code(tmp_path):
    """The installed entry point (not just main()) exits 2 with one stderr line."""
    p = subprocess.run([sys.executable, "-m", "hrlaif.harness.cli", "eval", "--limit", "0"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
