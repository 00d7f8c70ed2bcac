"""`--hub` loaders through the real `datasets.load_dataset` call, with each hub id swapped for a local
directory laid out like that hub dataset: its README `configs:`, config names, split names, field
names and parquet files (cais/mmlu, ceval/ceval-exam, openai/gsm8k, openai/openai_humaneval,
toxigen/toxigen-data). Rows come from the shared data slices; each hub load must give the same
docs (and, for multiple choice, the same official lm-eval prompt) as the local loader on the same rows."""
from __future__ import annotations

import csv
import dataclasses
import gzip
import json
from pathlib import Path

import pytest

from hrlaif.evalsets import registry
from hrlaif.evalsets.loaders import load


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_datasets"))


def write_hub(root: Path, configs: dict[str, dict[str, list[dict]]], features=None) -> Path:
    """A hub-style dataset repo: <config>/<split>-00000-of-00001.parquet and a README whose YAML
    header lists every config's data files, as the hub's parquet conversions do."""
    import datasets
    import yaml

    card = {"configs": []}
    for name, splits in configs.items():
        files = []
        for split, rows in splits.items():
            (root / name).mkdir(parents=True, exist_ok=True)
            ds = datasets.Dataset.from_list(rows, features=features)
            ds.to_parquet(root / name / f"{split}-00000-of-00001.parquet")
            files.append({"split": split, "path": f"{name}/{split}-*"})
        card["configs"].append({"config_name": name, "data_files": files})
    (root / "README.md").write_text(f"---\n{yaml.safe_dump(card)}---\n# test copy\n", encoding="utf-8")
    return root


def hub_spec(name: str, path: Path) -> dict:
    sp = registry.spec(name)
    return dataclasses.replace(sp, hub=dataclasses.replace(sp.hub, path=str(path)))


def csv_rows(path: Path, n: int) -> list[list[str]]:
    return list(csv.reader(path.open(encoding="utf-8")))[:n]


def same_docs(hub_data, local_data, keys: tuple[str, ...]) -> None:
    assert hub_data.groups.keys() == local_data.groups.keys()
    for g in local_data.groups:
        strip = lambda docs: [{k: d[k] for k in keys} for d in docs]  # noqa: E731
        assert strip(hub_data.groups[g]) == strip(local_data.groups[g]), g
        assert strip(hub_data.fewshot.get(g, [])) == strip(local_data.fewshot.get(g, [])), g


def first_prompt(data, sp) -> str:
    from lm_eval.api.task import ConfigurableTask

    from hrlaif.evalsets.lmeval_tasks import task_configs
    task = ConfigurableTask(config=task_configs(data, sp)[0])
    return task.fewshot_context(task.eval_docs[0], num_fewshot=sp.num_fewshot)


def test_mmlu_from_a_cais_mmlu_layout(shared_data, tmp_path):
    import datasets

    subjects = ["astronomy", "marketing"]
    features = datasets.Features({"question": datasets.Value("string"), "subject": datasets.Value("string"),
                                  "choices": datasets.Sequence(datasets.Value("string")),
                                  "answer": datasets.ClassLabel(names=list("ABCD"))})
    local = tmp_path / "local"
    configs = {}
    for s in subjects:
        splits = {}
        for split, hub_split, n in (("test", "test", 4), ("dev", "dev", 5), ("val", "validation", 2)):
            part = "test" if split == "val" else split
            src = shared_data / "mmlu" / part / f"{s}_{part}.csv"
            rows = csv_rows(src, n)
            splits[hub_split] = [{"question": r[0], "subject": s, "choices": r[1:5], "answer": "ABCD".index(r[5])}
                                 for r in rows]
            if split != "val":
                (local / "mmlu" / split).mkdir(parents=True, exist_ok=True)
                with (local / "mmlu" / split / f"{s}_{split}.csv").open("w", newline="", encoding="utf-8") as f:
                    csv.writer(f).writerows(rows)
        configs[s] = splits
    configs["all"] = {"test": configs["astronomy"]["test"] + configs["marketing"]["test"]}  # not a subject
    sp = hub_spec("mmlu", write_hub(tmp_path / "cais_mmlu", configs, features))
    data = load(sp, hub=True)
    assert data.source == f"hub:{tmp_path / 'cais_mmlu'}" and sorted(data.groups) == subjects
    assert len(data.docs) == 8 and all(len(v) == 5 for v in data.fewshot.values())
    ref = load(registry.spec("mmlu"), local)
    same_docs(data, ref, ("doc_id", "question", "choices", "answer"))
    assert first_prompt(data, sp) == first_prompt(ref, registry.spec("mmlu"))


def test_ceval_from_a_ceval_exam_layout(shared_data, tmp_path):
    subjects = ["computer_network", "law"]
    configs = {}
    for s in subjects:
        splits = {}
        for split, n in (("val", 3), ("dev", 5)):
            rows = csv_rows(shared_data / "ceval" / split / f"{s}_{split}.csv", n + 1)
            header, body = rows[0], rows[1:]
            splits[split] = [{"id": int(r[0]), "question": r[1], "A": r[2], "B": r[3], "C": r[4], "D": r[5],
                              "answer": r[6], "explanation": r[7] if len(r) > 7 else ""} for r in body]
            assert header[:7] == ["id", "question", "A", "B", "C", "D", "answer"]
        splits["test"] = [{**r, "answer": "", "explanation": ""} for r in splits["val"]]  # test has no answers
        configs[s] = splits
    sp = hub_spec("ceval", write_hub(tmp_path / "ceval_exam", configs))
    data = load(sp, hub=True)
    assert sorted(data.groups) == subjects and len(data.docs) == 6
    local = tmp_path / "local" / "ceval"
    for s in subjects:
        for split, n in (("val", 3), ("dev", 5)):
            (local / split).mkdir(parents=True, exist_ok=True)
            rows = csv_rows(shared_data / "ceval" / split / f"{s}_{split}.csv", n + 1)
            with (local / split / f"{s}_{split}.csv").open("w", newline="", encoding="utf-8") as f:
                csv.writer(f).writerows(rows)
    ref = load(registry.spec("ceval"), tmp_path / "local")
    same_docs(data, ref, ("doc_id", "question", "choices", "answer"))
    assert first_prompt(data, sp) == first_prompt(ref, registry.spec("ceval"))


def test_gsm8k_from_the_openai_gsm8k_layout(shared_data, tmp_path):
    rows = {s: [json.loads(line) for line in (shared_data / "gsm8k" / f"{s}.jsonl").open()][:4]
            for s in ("test", "train")}
    socratic = {s: [{**r, "answer": "Q? A. " + r["answer"]} for r in v] for s, v in rows.items()}
    sp = hub_spec("gsm8k", write_hub(tmp_path / "gsm8k", {"main": rows, "socratic": socratic}))
    data = load(sp, hub=True)  # config `main`, not `socratic`
    local = tmp_path / "local" / "gsm8k"
    local.mkdir(parents=True)
    for s, v in rows.items():
        (local / f"{s}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in v))
    same_docs(data, load(registry.spec("gsm8k"), tmp_path / "local"), ("doc_id", "question", "answer"))
    assert len(data.docs) == 4 and len(data.fewshot["test"]) == 4


def test_humaneval_from_the_openai_humaneval_layout(shared_data, tmp_path):
    with gzip.open(shared_data / "humaneval" / "HumanEval.jsonl.gz", "rt") as f:
        probs = [json.loads(line) for line in f][:3]
    sp = hub_spec("humaneval", write_hub(tmp_path / "openai_humaneval", {"openai_humaneval": {"test": probs}}))
    data = load(sp, hub=True)
    assert [d["task_id"] for d in data.docs] == [p["task_id"] for p in probs]
    assert [d["prompt"] for d in data.docs] == [p["prompt"] for p in probs]
    assert all(d["test"] and d["entry_point"] for d in data.docs)


def test_toxigen_from_the_toxigen_data_layout(shared_data, tmp_path):
    rows, local = [], tmp_path / "local" / "toxigen" / "prompts"
    local.mkdir(parents=True)
    for group in ("asian", "black"):
        for label, kind in ((1, "hate"), (0, "neutral")):
            lines = (shared_data / "toxigen" / "prompts" / f"{kind}_{group}_1k.txt").read_text().splitlines()[:3]
            if kind == "hate":
                (local / f"hate_{group}_1k.txt").write_text("\n".join(lines) + "\n")
            for line in lines:  # the train config repeats each prompt once per generation
                rows += [{"prompt": line, "generation": f"text {i}", "generation_method": "top-k", "group": group,
                          "prompt_label": label, "roberta_prediction": 0.5} for i in range(2)]
    sp = hub_spec("toxigen", write_hub(tmp_path / "toxigen_data", {"train": {"train": rows}}))
    data = load(sp, hub=True)
    same_docs(data, load(registry.spec("toxigen"), tmp_path / "local"), ("doc_id", "prompt"))
    assert len(data.docs) == 6 and "\\n" not in data.docs[0]["prompt"]


def test_a_missing_hub_dataset_is_one_line(tmp_path):
    from hrlaif.core.errors import UserError

    with pytest.raises(UserError, match=r"cannot list the configs of .*nowhere on the hub"):
        load(hub_spec("mmlu", tmp_path / "nowhere"), hub=True)
    with pytest.raises(UserError, match=r"cannot load split 'test' of .*nowhere \(config main\) from the hub"):
        load(hub_spec("gsm8k", tmp_path / "nowhere"), hub=True)
