"""A new multiple-choice benchmark costs one YAML file and its data.

The spec and the data live in this test's own temp dir, in CMMLU's official layout
(`cmmlu/{dev,test}/{subject}.csv`, header `,Question,A,B,C,D,Answer` with an unnamed index
column first). No library file is touched: `hrlaif eval`, `hrlaif gate` and the report tables
find the benchmark through the registry ($HRLAIF_SPEC_PATH or EvalConfig.spec_dirs).
"""
from __future__ import annotations

import csv
import json
import shutil

import pytest

from hrlaif.core.errors import UserError
from hrlaif.evalsets import registry

# Its own prompt template: the kind turns it into an lm-eval task (no code for this benchmark).
CMMLU_SPEC = r"""
name: cmmlu
title: CMMLU
kind: multiple_choice
order: 25                      # between MMLU (20) and GSM8K (30) in tables
format: csv
csv:                           # CMMLU layout: unnamed index column, then Question,A,B,C,D,Answer
  header: true
  id: 0
  question: Question
  choices: [A, B, C, D]
  answer: Answer
local:
  eval: cmmlu/test/{subject}.csv
  fewshot: cmmlu/dev/{subject}.csv
num_fewshot: 2
chat_template: true
prompt:
  description: "以下是关于{subject_words}的单项选择题，请直接给出正确答案的选项。\n\n"
  doc_to_text: "题目：{{question.strip()}}\nA. {{A}}\nB. {{B}}\nC. {{C}}\nD. {{D}}\n答案是："
  doc_to_choice: [A, B, C, D]
  doc_to_target: "{{['A', 'B', 'C', 'D'].index(answer)}}"
metric: acc
higher_is_better: true
group_by: subject
definition: >-
  Accuracy: the option letter with the highest log-likelihood after the 2-shot prompt.
"""

# The same data through lm-eval's official cmmlu task: only the task name and its folder.
CMMLU_OFFICIAL_SPEC = r"""
name: cmmlu_official
title: CMMLU (lm-eval task)
kind: multiple_choice
order: 26
lm_eval_task: cmmlu_{subject}
lm_eval_dir: cmmlu
lm_eval_fallback: cmmlu_agronomy
format: csv
csv: {header: true, id: 0, question: Question, choices: [A, B, C, D], answer: Answer}
local: {eval: "cmmlu/test/{subject}.csv", fewshot: "cmmlu/dev/{subject}.csv"}
num_fewshot: 2
chat_template: true
metric: acc
higher_is_better: true
group_by: subject
definition: Accuracy with lm-eval's official CMMLU prompt.
"""

ROWS = {  # subject -> (test rows, dev rows); each row: question, A, B, C, D, answer
    "agronomy": ([("水稻属于哪一科？", "禾本科", "豆科", "茄科", "十字花科", "A"),
                  ("小麦的主要营养成分是？", "脂肪", "淀粉", "纤维", "维生素", "B"),
                  ("氮肥主要促进植物的？", "开花", "结果", "茎叶生长", "根系休眠", "C")],
                 [("玉米原产于？", "美洲", "亚洲", "非洲", "欧洲", "A"),
                  ("大豆属于哪一科？", "禾本科", "豆科", "菊科", "蔷薇科", "B")]),
    "anatomy": ([("人体最大的器官是？", "肝脏", "皮肤", "肺", "心脏", "B"),
                 ("成人有多少块骨头？", "106", "156", "206", "256", "C"),
                 ("心脏有几个腔？", "二", "三", "五", "四", "D")],
                [("红细胞的主要功能是？", "运输氧气", "免疫", "凝血", "消化", "A"),
                 ("大脑分为几个半球？", "一", "二", "三", "四", "B")]),
}


def write_cmmlu(root, rows=ROWS):
    for subject, (test, dev) in rows.items():
        for split, items in (("test", test), ("dev", dev)):
            path = root / "cmmlu" / split / f"{subject}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w", encoding="utf-8", newline="") as f:
                w = csv.writer(f)
                w.writerow(["", "Question", "A", "B", "C", "D", "Answer"])
                w.writerows([i, *r] for i, r in enumerate(items))
    return root


@pytest.fixture
def spec_dir(tmp_path):
    d = tmp_path / "specs"
    d.mkdir()
    (d / "cmmlu.yaml").write_text(CMMLU_SPEC, encoding="utf-8")
    (d / "cmmlu_official.yaml").write_text(CMMLU_OFFICIAL_SPEC, encoding="utf-8")
    return d


def test_cmmlu_from_a_spec_dir_end_to_end(spec_dir, tmp_path, tiny_model_dir, run_cli, monkeypatch):
    monkeypatch.setenv("HRLAIF_CACHE", str(tmp_path / "cache"))  # this test's outputs only
    data = write_cmmlu(tmp_path / "data")
    with pytest.raises(UserError, match="unknown benchmark 'cmmlu'"):
        registry.parse_benchmarks("cmmlu")  # not in the library: only the spec dir knows it

    monkeypatch.setenv(registry.ENV, str(spec_dir))
    out = tmp_path / "eval"
    code, stdout, err = run_cli("eval", "--benchmarks", "cmmlu,cmmlu_official", "--data-dir", data,
                                "--model", tiny_model_dir, "--out", out)
    assert code == 0, err
    res = json.loads((out / "results.json").read_text())
    for name, title in (("cmmlu", "CMMLU"), ("cmmlu_official", "CMMLU (lm-eval task)")):
        e = res["benchmarks"][name]
        assert e["title"] == title and e["n"] == 6 and e["metric"] == "acc" and e["higher_is_better"] is True
        assert e["source"] == f"local:{data.resolve()}" and sorted(e["breakdown"]) == ["agronomy", "anatomy"]
        rows = [json.loads(line) for line in (out / "samples" / f"{name}.jsonl").read_text().splitlines()]
        # doc_ids come from CMMLU's index column; targets are the Answer letters
        assert [r["doc_id"] for r in rows] == [f"{s}/{i}" for s in ("agronomy", "anatomy") for i in range(3)]
        assert [r["target"] for r in rows] == ["A", "B", "C", "B", "C", "D"]
        assert all(len(r["loglikelihoods"]) == 4 and r["output"] in "ABCD" for r in rows)
        assert e["score"] == pytest.approx(sum(r["score"] for r in rows) / 6)
    assert res["benchmarks"]["cmmlu_official"]["extra"]["lm_eval_task"] == "cmmlu_{subject}"
    assert "lm_eval_task" not in res["benchmarks"]["cmmlu"]["extra"]  # its own template
    # The two prompts differ (template vs official), so the log-likelihoods do too.
    ll = {n: [json.loads(x)["loglikelihoods"] for x in (out / "samples" / f"{n}.jsonl").read_text().splitlines()]
          for n in ("cmmlu", "cmmlu_official")}
    assert ll["cmmlu"] != ll["cmmlu_official"]

    # The same benchmark through EvalConfig.spec_dirs instead of the environment (a cached re-run).
    monkeypatch.delenv(registry.ENV)
    again = tmp_path / "again"
    code, stdout, err = run_cli("eval", "--benchmarks", "cmmlu", "--data-dir", data, "--model", tiny_model_dir,
                                "--spec-dirs", spec_dir, "--out", again)
    assert code == 0, err
    assert "(cached)" in stdout
    assert json.loads((again / "results.json").read_text())["benchmarks"]["cmmlu"]["score"] == \
        res["benchmarks"]["cmmlu"]["score"]

    # The gate evaluates a checkpoint candidate on the baseline's benchmarks, data and spec dirs.
    # Six identical items can only show non-inferiority at a margin above 39 pt.
    code, stdout, err = run_cli("gate", "--baseline", again, "--candidate", tiny_model_dir,
                                "--margin", "cmmlu=40", "--out", tmp_path / "gate")
    assert code == 0, err + stdout
    gate = json.loads((tmp_path / "gate" / "gate.json").read_text())
    assert gate["passed"] and list(gate["benchmarks"]) == ["cmmlu"]
    assert gate["benchmarks"]["cmmlu"]["n"] == 6 and gate["benchmarks"]["cmmlu"]["higher_is_better"] is True


def test_report_tables_place_the_new_benchmark_by_its_spec(spec_dir, tmp_path, tiny_model_dir, run_cli,
                                                          monkeypatch):
    from hrlaif.reports.collect import benchmark_frame, load_results
    from hrlaif.reports.tables import comparison_table

    monkeypatch.setenv("HRLAIF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(registry.ENV, str(spec_dir))
    data = write_cmmlu(tmp_path / "data")
    run = tmp_path / "run"
    assert run_cli("eval", "--benchmarks", "cmmlu", "--data-dir", data, "--model", tiny_model_dir,
                   "--out", run / "eval_sft")[0] == 0
    shutil.copytree(run / "eval_sft", run / "eval_rlaif")

    df = comparison_table(benchmark_frame(load_results(run)))
    cols = list(df.columns)
    # registered: placed in spec order (order 25: after MMLU, before GSM8K); the default set always has a
    # column (a dash when not evaluated), another registered spec only when evaluated
    assert cols.index("MMLU") < cols.index("CMMLU") < cols.index("GSM8K") and "CMMLU (lm-eval task)" not in cols
    assert [registry.spec(n).order for n in ("mmlu", "cmmlu", "cmmlu_official", "gsm8k")] == [20, 25, 26, 30]
    assert df.loc["SFT", "CMMLU"].endswith("n=6") and "Δ +0.0 pt" in df.loc["RLAIF", "CMMLU"]
    assert df.loc["SFT", "MMLU"] == "—" and df.loc["HRLAIF", "CMMLU"] == "—"
    cell = df.loc["RLAIF", "CMMLU"]

    # Not registered where the report is built: results.json alone names and orders it (last).
    monkeypatch.delenv(registry.ENV)
    df = comparison_table(benchmark_frame(load_results(run)))
    assert list(df.columns)[-1] == "CMMLU" and "CMMLU (lm-eval task)" not in df.columns
    assert df.loc["RLAIF", "CMMLU"] == cell


def test_bad_specs_are_one_line_errors(spec_dir, tmp_path, monkeypatch):
    monkeypatch.setenv(registry.ENV, str(spec_dir))
    (spec_dir / "broken.yaml").write_text("name: broken\ntitle: [unclosed\n")
    with pytest.raises(UserError, match=r"broken.yaml is not valid YAML \(line 3\)"):
        registry.names()
    (spec_dir / "broken.yaml").write_text("title: Broken\nkind: multiple_choice\n")
    with pytest.raises(UserError, match="broken.yaml: missing field.s. format, metric, higher_is_better, definition"):
        registry.names()
    (spec_dir / "broken.yaml").unlink()
    (spec_dir / "mmlu.yaml").write_text(CMMLU_SPEC.replace("name: cmmlu", "name: mmlu"))
    with pytest.raises(UserError, match="benchmark 'mmlu' is defined twice"):
        registry.names()
    (spec_dir / "mmlu.yaml").unlink()
    (spec_dir / "odd.yaml").write_text(CMMLU_SPEC.replace("name: cmmlu", "name: odd")
                                       .replace("kind: multiple_choice", "kind: guess"))
    with pytest.raises(UserError, match=r"odd.yaml: kind: must be one of multiple_choice, .* \(got 'guess'\)$"):
        registry.spec("odd")  # the registered kinds only (hrlaif/evalsets/kinds KINDS), when the spec is read
    (spec_dir / "odd.yaml").unlink()
    monkeypatch.setenv(registry.ENV, str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="spec directory not found"):
        registry.names()


def test_bad_spec_dirs_on_the_command_line_are_one_line_errors(spec_dir, tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv(registry.ENV, str(tmp_path / "nowhere"))
    code, _, err = run_cli("eval", "--benchmarks", "mmlu", "--out", tmp_path / "o")
    assert code == 2 and err.strip().splitlines() == [
        f"hrlaif: error: $HRLAIF_SPEC_PATH: spec directory not found: {tmp_path / 'nowhere'}"]
    monkeypatch.delenv(registry.ENV)
    (spec_dir / "cmmlu.yaml").write_text("name: cmmlu\ntitle: [unclosed\n")
    code, _, err = run_cli("eval", "--benchmarks", "cmmlu", "--spec-dirs", spec_dir, "--out", tmp_path / "o")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "cmmlu.yaml is not valid YAML" in err
    code, _, err = run_cli("eval", "--benchmarks", "mmlu", "--spec-dirs", tmp_path / "nope", "--out", tmp_path / "o")
    assert code == 2 and "spec_dirs: spec directory not found" in err and len(err.strip().splitlines()) == 1


def test_template_spec_renders_its_own_prompt(spec_dir, tmp_path, monkeypatch):
    """The spec's prompt fields are the lm-eval task: description, 2-shot from dev (in file order),
    doc_to_text over the CSV's columns, the answer letter as target."""
    from lm_eval.api.task import ConfigurableTask

    from hrlaif.evalsets.lmeval_tasks import task_configs
    from hrlaif.evalsets.loaders import load

    monkeypatch.setenv(registry.ENV, str(spec_dir))
    data = load(registry.spec("cmmlu"), write_cmmlu(tmp_path / "data"))
    task = ConfigurableTask(config=task_configs(data, registry.spec("cmmlu"))[0])
    doc = task.test_docs()[0]
    assert task.fewshot_context(doc, num_fewshot=2) == (
        "以下是关于agronomy的单项选择题，请直接给出正确答案的选项。\n\n"
        "题目：玉米原产于？\nA. 美洲\nB. 亚洲\nC. 非洲\nD. 欧洲\n答案是： A\n\n"
        "题目：大豆属于哪一科？\nA. 禾本科\nB. 豆科\nC. 菊科\nD. 蔷薇科\n答案是： B\n\n"
        "题目：水稻属于哪一科？\nA. 禾本科\nB. 豆科\nC. 茄科\nD. 十字花科\n答案是：")
    assert task.doc_to_target(doc) == 0 and task.doc_to_choice(doc) == ["A", "B", "C", "D"]


# A misspelt key or kind, anywhere in a spec: one line naming the file and the key, with the nearest
# valid one; the spec is read strictly, as lm-eval's TaskConfig is.
MISSPELT = [
    ("kind: multiple_choice", "kind: multiple_choise",
     "kind: must be one of multiple_choice, generate_extract, execute, classify, judge "
     "(got 'multiple_choise'; did you mean 'multiple_choice'?)"),
    ("num_fewshot: 2", "num_fewshots: 2", "unknown key 'num_fewshots' (did you mean 'num_fewshot'?)"),
    ("  question: Question", "  questoin: Question", "unknown key 'csv.questoin' (did you mean 'question'?)"),
    ("  doc_to_text:", "  doc_to_txt:", "unknown key 'prompt.doc_to_txt' (did you mean 'doc_to_text'?)"),
    ("metric: acc", "metric: acc\nfilters: [strict-match]",
     "unknown key 'filters' (a field of the generate_extract: section, for kind generate_extract)"),
    ("metric: acc", "metric: acc\njudge: {until: []}",
     "judge: is the section of kind judge, and this spec's kind is multiple_choice"),
    ("higher_is_better: true", "higher_is_better: yes please",
     "higher_is_better: expected true/false, got 'yes please'"),
    ("order: 25 ", "order: [25] ", "order: expected a number or null, got [25]"),
]


@pytest.mark.parametrize("good,bad,problem", MISSPELT, ids=[m[1].split(":")[0].strip() for m in MISSPELT])
def test_a_misspelt_spec_is_one_line_naming_file_key_and_suggestion(spec_dir, monkeypatch, good, bad, problem):
    assert CMMLU_SPEC.count(good) == 1
    (spec_dir / "cmmlu.yaml").write_text(CMMLU_SPEC.replace(good, bad), encoding="utf-8")
    monkeypatch.setenv(registry.ENV, str(spec_dir))
    with pytest.raises(UserError) as e:
        registry.names()
    assert str(e.value) == f"benchmark spec {spec_dir / 'cmmlu.yaml'}: {problem}"


def test_a_misspelt_spec_on_the_command_line_is_exit_2(spec_dir, tmp_path, run_cli):
    (spec_dir / "cmmlu.yaml").write_text(CMMLU_SPEC.replace("kind: multiple_choice", "kind: multiple_choise")
                                         .replace("num_fewshot: 2", "num_fewshots: 2"), encoding="utf-8")
    code, _, err = run_cli("eval", "--benchmarks", "cmmlu", "--spec-dirs", spec_dir, "--out", tmp_path / "o")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "cmmlu.yaml: " in err and "did you mean 'multiple_choice'?" in err  # the first problem found
    (spec_dir / "cmmlu.yaml").write_text(CMMLU_SPEC.replace("num_fewshot: 2", "num_fewshots: 2"), encoding="utf-8")
    code, _, err = run_cli("eval", "--benchmarks", "cmmlu", "--spec-dirs", spec_dir, "--out", tmp_path / "o")
    assert code == 2 and err.startswith("hrlaif eval: error: ") and err.strip().endswith(
        f"benchmark spec {spec_dir / 'cmmlu.yaml'}: unknown key 'num_fewshots' (did you mean 'num_fewshot'?)")


def test_every_spec_field_is_documented_once():
    """The fields a spec may have are the BenchmarkSpec dataclass's, each with its help text, and the
    shipped specs use nothing else (they load); embedded_limit is one of them."""
    import dataclasses

    from hrlaif.core.settings import fields_of
    from hrlaif.evalsets.spec import SECTIONS, BenchmarkSpec, DerivedSpec

    for cls in (BenchmarkSpec, DerivedSpec, *SECTIONS.values()):
        undocumented = [f.name for f in fields_of(cls) if not f.metadata.get("help")]
        assert not undocumented, (cls.__name__, undocumented)
    names = {f.name for f in fields_of(BenchmarkSpec)}
    assert {"embedded_limit", "num_fewshot", "kind", *SECTIONS} <= names
    assert registry.spec("humaneval").embedded_limit == 20
    assert dataclasses.is_dataclass(registry.spec("gsm8k").generate_extract)


def test_benchmark_code_sits_beside_its_spec(spec_dir, tmp_path, monkeypatch):
    """A benchmark with a file format of its own names its reader as `format: <name>.py` beside its
    spec (lm-eval's tasks/<name>/utils.py); a spec elsewhere may reuse a shipped one (gsm8k.py)."""
    from hrlaif.evalsets.loaders import load

    (spec_dir / "cmmlu.yaml").unlink()
    (spec_dir / "cmmlu_official.yaml").unlink()
    (spec_dir / "riddles.py").write_text(
        "def read(path, group, sp):\n"
        "    rows = [line.split('|') for line in path.read_text(encoding='utf-8').splitlines() if line]\n"
        "    return [{'question': q, 'answer': 'A #### ' + a, 'doc_id': f'{group}/{i}', 'group': group}\n"
        "            for i, (q, a) in enumerate(rows)]\n", encoding="utf-8")
    spec = (registry.SPEC_DIR / "gsm8k.yaml").read_text(encoding="utf-8").replace("name: gsm8k", "name: riddles")
    (spec_dir / "riddles.yaml").write_text(spec.replace("format: gsm8k.py", "format: riddles.py")
                                           .replace("gsm8k/test.jsonl", "riddles.txt"), encoding="utf-8")
    (spec_dir / "gsm8k_again.yaml").write_text(spec.replace("name: riddles", "name: gsm8k_again"), encoding="utf-8")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "riddles.txt").write_text("two plus two?|4\nten less one?|9\n", encoding="utf-8")
    monkeypatch.setenv(registry.ENV, str(spec_dir))
    data = load(registry.spec("riddles"), tmp_path / "data")
    assert [(d["doc_id"], d["answer"]) for d in data.docs] == [("test/0", "A #### 4"), ("test/1", "A #### 9")]
    again = load(registry.spec("gsm8k_again"))  # the shipped hrlaif/evalsets/specs/gsm8k.py reads the embedded copy
    assert [d["doc_id"] for d in again.docs] == [d["doc_id"] for d in load(registry.spec("gsm8k")).docs]
    (spec_dir / "riddles.yaml").write_text(spec.replace("format: gsm8k.py", "format: riddle.py"), encoding="utf-8")
    with pytest.raises(UserError, match=r"riddles.yaml: format: riddle.py is neither beside the spec nor among"):
        registry.names()
    (spec_dir / "riddles.yaml").write_text(spec.replace("format: gsm8k.py", "format: cvs"), encoding="utf-8")
    with pytest.raises(UserError, match=r"riddles.yaml: format: must be one of .*\(got 'cvs'; did you mean 'csv'\?\)$"):
        registry.names()
