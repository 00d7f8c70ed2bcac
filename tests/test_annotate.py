"""Human annotation round trip: export a sheet, fill it, import it, compare with the AI judge."""
from __future__ import annotations

import csv
import json

import pytest

from hrlaif.core.store import write_jsonl


@pytest.fixture()
def eval_dir(tmp_path):
    rows = []
    for i in range(8):
        rows.append({"doc_id": f"math/{i}", "group": "math", "prompt": f"{i}+1?", "target": str(i + 1),
                     "output": f"The answer is {i + 1 if i % 2 == 0 else 0}.", "score": int(i % 2 == 0),
                     "win": [1.0, 0.0, 0.5, 1.0][i % 4], "baseline_output": "I don't know."})
    write_jsonl(tmp_path / "ev" / "samples" / "satisfaction.jsonl", rows)
    return tmp_path / "ev"


def _fill(sheet, fn):
    with open(sheet, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
        fields = list(rows[0])
    for r in rows:
        fn(r)
    with open(sheet, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def test_round_trip_agreeing_rater(eval_dir, tmp_path, run_cli):
    sheet = tmp_path / "sheet.csv"
    code, out, err = run_cli("annotate", "export", "--eval", eval_dir, "--out", sheet)
    assert code == 0, err
    lines = (eval_dir / "samples" / "satisfaction.jsonl").read_text().splitlines()
    ai = {r["doc_id"]: r for r in map(json.loads, lines)}

    def agree(r):  # a rater who agrees with the AI judge on everything
        r["human_satisfied"] = "yes" if ai[r["doc_id"]]["score"] else "no"
        w = ai[r["doc_id"]]["win"]
        model_side = "A" if r["_a_is_model"] == "1" else "B"
        r["human_preference"] = "tie" if w == 0.5 else model_side if w == 1.0 else ("B" if model_side == "A" else "A")
    _fill(sheet, agree)
    code, out, err = run_cli("annotate", "import", "--sheet", sheet, "--eval", eval_dir)
    assert code == 0, err
    rep = json.loads((eval_dir / "human_agreement.json").read_text())
    assert rep["human_satisfaction"]["score"] == pytest.approx(0.5) and rep["human_satisfaction"]["n"] == 8
    assert rep["satisfaction_kappa"] == pytest.approx(1.0)
    assert rep["preference_kappa"] == pytest.approx(1.0)
    assert rep["human_win_ratio"]["wins"] == 4 and rep["human_win_ratio"]["ties"] == 2


def test_disagreeing_rater_has_negative_kappa(eval_dir, tmp_path, run_cli):
    sheet = tmp_path / "sheet.csv"
    run_cli("annotate", "export", "--eval", eval_dir, "--out", sheet)
    lines = (eval_dir / "samples" / "satisfaction.jsonl").read_text().splitlines()
    ai = {r["doc_id"]: r for r in map(json.loads, lines)}
    _fill(sheet, lambda r: r.update(human_satisfied="no" if ai[r["doc_id"]]["score"] else "yes", human_preference=""))
    code, _, err = run_cli("annotate", "import", "--sheet", sheet, "--eval", eval_dir, "--out", tmp_path / "r.json")
    assert code == 0, err
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["satisfaction_kappa"] == pytest.approx(-1.0) and rep["satisfaction_agreement"] == 0.0


@pytest.mark.parametrize("content,needle", [
    ("doc_id,foo\nmath/0,1\n", "missing column"),
    ("doc_id,human_satisfied\nmath/0,maybe\n", "'maybe' is not a verdict"),
    ("doc_id,human_satisfied\nnope/9,yes\n", "not in"),
    ("doc_id,human_satisfied\nmath/0,\n", "no verdicts"),
])
def test_malformed_sheets(eval_dir, tmp_path, run_cli, content, needle):
    sheet = tmp_path / "bad.csv"
    sheet.write_text(content)
    code, _, err = run_cli("annotate", "import", "--sheet", sheet, "--eval", eval_dir)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
