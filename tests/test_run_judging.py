"""The pipeline's judging steps without the pipeline: the shared held-out pair set, the hybrid RM's
red-team data, `hrlaif redteam`, `hrlaif run --dry-run` (and the shipped configs), and the human
pairs sheet for Table 1."""
from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import pytest
from fake_judge import FakeJudge

from hrlaif.core.store import read_json, read_jsonl, write_jsonl
from hrlaif.harness.config import QUICKSTART, RunConfig, load_config
from hrlaif.trainers.reward_model import load_labels, split_heldout

MCQ = "Which is a fruit?\nA. car\nB. apple\nC. dog\nD. stone"


def samples_file(path: Path) -> Path:
    rows = [{"id": f"m{i}", "prompt": f"What is {i} + {i}?", "category": "math", "std_answer": str(2 * i),
             "responses": [f"The answer is {2 * i}.", f"It is {2 * i + 1}."], "finished": [True, True]}
            for i in range(6)]
    rows += [{"id": "q", "prompt": MCQ, "category": "multiple_choice", "std_answer": "B",
              "responses": ["(B) apple", "(C) dog"], "finished": [True, True]},
             {"id": "o", "prompt": "Say hi.", "category": "open_qa", "std_answer": None,
              "responses": ["hi", "hello there"], "finished": [True, True]}]
    write_jsonl(path, rows)
    return path


def test_shared_heldout_set_is_independent_truth_on_the_rms_own_draw(tmp_path, shared_data):
    from hrlaif.harness.run_judges import heldout_stage, rm_config

    s = samples_file(tmp_path / "samples.jsonl")
    cfg = RunConfig(seed=5, data_dir=str(shared_data))
    cfg = replace(cfg, reward_model=replace(cfg.reward_model, heldout_frac=0.5), label=replace(cfg.label, hh_limit=3))
    out = heldout_stage(cfg, s, tmp_path / "heldout")
    ids = read_json(tmp_path / "heldout" / "ids.json")["ids"]
    _, held = split_heldout([{"id": r["id"]} for r in read_jsonl(s)], 0.5, 5)
    assert sorted(ids) == sorted(g["id"] for g in held) and len(ids) == 4
    groups = {g["id"]: g for g in read_jsonl(out)}
    for sid in ids:  # every held-out id is there (kept out of training), truth pairs where there is truth
        want = [] if sid == "o" else [[0, 1]]
        assert groups[sid]["pairs"] == want
        assert (groups[sid]["truth"] or "").startswith("second answer check") == (sid != "o")
    hh = [g for g in groups.values() if g["id"].startswith("hh/")]
    assert len(hh) == 3 and all(g["pairs"] == [[0, 1]] and "hh-rlhf" in g["truth"] for g in hh)
    assert len(load_labels(out)) == len(ids) + 3  # the reward model's loader takes it as it is
    rc = rm_config(cfg, Path("sft"), Path("l.jsonl"), s, out, tmp_path / "rm")
    assert rc.heldout_pairs == str(out) and rc.heldout_frac == 0.0  # both RMs hold out exactly these ids


def test_hybrid_rm_data_adds_the_red_team_rows(tmp_path):
    from hrlaif.harness.run_judges import rm_training_data

    s = samples_file(tmp_path / "samples.jsonl")
    labels = [r | {"mode": "hybrid", "pairs": [[0, 1]]} for r in read_jsonl(s)]
    write_jsonl(tmp_path / "labels.jsonl", labels)
    rt = tmp_path / "redteam"
    write_jsonl(rt / "samples.jsonl", [{"id": "redteam:rt-1", "prompt": "bad?", "category": "harmlessness",
                                        "responses": ["HARMFUL a", "HARMFUL b"], "finished": [True, True]}])
    write_jsonl(rt / "labels.jsonl", [{"id": "redteam:rt-1", "prompt": "bad?", "category": "harmlessness",
                                       "responses": ["HARMFUL a", "HARMFUL b", "I won't help."],
                                       "sources": ["policy", "policy", "rewrite"], "pairs": [[2, 0], [2, 1]]}])
    lab, sam = rm_training_data(tmp_path / "labels.jsonl", s, rt / "labels.jsonl", tmp_path / "rm")
    groups = load_labels(lab, sam)  # the RM's own cross-check of labels against samples passes
    assert len(groups) == len(labels) + 1 and groups[-1]["pairs"] == [(2, 0), (2, 1)]
    assert rm_training_data(tmp_path / "labels.jsonl", s, None, tmp_path / "rm2") == (tmp_path / "labels.jsonl", s)


def test_redteam_cli_flags_rewrites_rejudges_and_counts(tmp_path, tiny_model_dir, run_cli, monkeypatch):
    monkeypatch.setenv("HRLAIF_CACHE", str(tmp_path / "hc"))
    # every SFT response is flagged; a rewrite passes the second harm check
    answers = [("point you to safe", "No"), ("Is the response harmful?", "Yes")]
    with FakeJudge(mode="smart", answers=answers) as fj:
        code, out, err = run_cli("redteam", "--model", tiny_model_dir, "--out", tmp_path / "rt", "--limit", "3",
                                 "--max-new-tokens", "4", "--judge-url", fj.url, "--judge-model", "fake")
    assert code == 0, err
    summ = read_json(tmp_path / "rt" / "summary.json")
    assert (summ["prompts"], summ["responses"], summ["flagged"]) == (3, 6, 6)
    assert (summ["rewrites"], summ["rewrites_kept"], summ["rewrites_dropped"]) == (6, 6, 0)
    assert summ["judge_usage"]["harmlessness"]["requests"] == 18  # 6 flags, 6 rewrites, 6 re-checks
    rows = read_jsonl(tmp_path / "rt" / "labels.jsonl")
    assert all(r["id"].startswith("redteam:rt-") and r["sources"] == ["policy"] * 2 + ["rewrite"] * 2 for r in rows)
    assert all(sorted(map(tuple, r["pairs"])) == [(2, 0), (2, 1), (3, 0), (3, 1)] for r in rows)
    assert "6 rewrites kept" in out


@pytest.fixture()
def no_models_no_judges(monkeypatch):
    """--dry-run must load no model and call no judge: any attempt fails the test."""
    import transformers

    from hrlaif.judges import client, server

    def boom(*a, **kw):
        raise AssertionError("the dry run loaded a model or called a judge")

    for cls in (transformers.AutoModelForCausalLM, transformers.AutoModelForSequenceClassification):
        monkeypatch.setattr(cls, "from_pretrained", boom)
    monkeypatch.setattr(client.Judge, "__init__", boom)
    monkeypatch.setattr(server, "embedded_server", boom)


def _rows(out: str) -> dict[tuple[str, str], list[str]]:
    got: dict[tuple[str, str], list[str]] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) > 7 and parts[0] in ("label_basic", "label_hybrid", "redteam", "ppo_rlaif", "eval_hrlaif"):
            got.setdefault((parts[0], parts[1]), []).append(line)
    return got


def test_dry_run_counts_requests_tokens_and_cost_without_loading_anything(tmp_path, run_cli, no_models_no_judges):
    cfg = tmp_path / "priced.yaml"
    cfg.write_text(QUICKSTART.read_text() + "\njudge: {url: 'http://127.0.0.1:9/v1', model: gpt-x, "
                   "price_per_1k_prompt_tokens: 0.5, price_per_1k_completion_tokens: 2.0}\n")
    code, out, err = run_cli("run", cfg, "--dry-run")
    assert code == 0, err
    assert "nothing is loaded, trained, or sent to a judge" in out and "14 report" in out
    assert "estimate: 4 characters per token" in out  # an endpoint: no local tokenizer
    from hrlaif.harness.dryrun import count, plan

    rows = count(load_config(cfg), plan(load_config(cfg)))
    basic = next(r for r in rows if r["stage"] == "label_basic")
    assert basic["requests"] == 16 * 4 * 3  # 16 prompts, K=4: 6 pairs x 2 orders
    assert basic["completion_tokens"] == basic["requests"] * 4  # choice_max_tokens each
    assert basic["cost"] == pytest.approx(basic["prompt_tokens"] / 1000 * 0.5 + basic["completion_tokens"] / 1000 * 2)
    cached = next(r for r in rows if r["stage"] == "label_hybrid" and r["cached"])
    assert cached["prompt_tokens"] == 0 and cached["cost"] == 0
    # eval_judge and harm_judge inherit the endpoint and its prices
    assert all(r["cost"] is not None for r in rows)
    assert "(the labelling judge's model: the grader is the labeller, so its verdicts are self-graded" in out


def test_dry_run_count_matches_what_labelling_sends(tmp_path, run_cli, monkeypatch):
    from hrlaif.harness.dryrun import count, plan

    monkeypatch.setenv("HRLAIF_CACHE", str(tmp_path / "hc"))
    s = samples_file(tmp_path / "samples.jsonl")
    prompts = tmp_path / "prompts.jsonl"
    write_jsonl(prompts, [{k: r[k] for k in ("id", "prompt", "category", "std_answer")} for r in read_jsonl(s)])
    cfg = load_config(None)
    cfg = replace(cfg, sample=replace(cfg.sample, prompts=str(prompts), limit=0, k=2),
                  label=replace(cfg.label, hh_limit=0))
    rows = [r for r in count(cfg, plan(cfg)) if r["stage"] == "label_basic"]
    with FakeJudge(mode="smart") as fj:
        code, _, err = run_cli("label", "--samples", s, "--mode", "basic", "--out", tmp_path / "o",
                               "--judge-url", fj.url, "--no-accuracy")
        assert code == 0, err
        assert fj.chat_calls == sum(r["requests"] for r in rows) == 8 * 2 + 8  # + the judge audit's repeats


SHIPPED = sorted({*QUICKSTART.parent.glob("*.yaml"), *(QUICKSTART.parents[2] / "configs").glob("*.yaml")})


@pytest.mark.parametrize("config", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_config_passes_the_dry_run(config, run_cli, no_models_no_judges):
    code, out, err = run_cli("run", config, "--dry-run")
    assert code == 0, err
    assert "total" in out and "judge requests" in out


def test_human_pairs_sheet_round_trip(tmp_path, run_cli):
    s = samples_file(tmp_path / "samples.jsonl")
    sheet = tmp_path / "pairs.csv"
    code, out, err = run_cli("annotate", "export", "--samples", s, "--out", sheet, "--limit", "2")
    assert code == 0, err
    rows = list(csv.DictReader(open(sheet, encoding="utf-8")))
    assert len(rows) == 2 and {r["id"] for r in rows} == {"m0", "m1"}
    for r in rows:  # the rater prefers the first sampled response; says tie on m1
        r["human_preference"] = "tie" if r["id"] == "m1" else ("A" if r["_a_index"] == "0" else "B")
    with open(sheet, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    code, out, err = run_cli("annotate", "import", "--sheet", sheet, "--samples", s)
    assert code == 0, err
    tie = next([int(r["_a_index"]), int(r["_b_index"])] for r in rows if r["id"] == "m1")
    assert read_jsonl(tmp_path / "human_pairs.jsonl") == [{"id": "m0", "pairs": [[0, 1]], "ties": []},
                                                          {"id": "m1", "pairs": [], "ties": [tie]}]
    assert "1 pairs, 1 ties" in out
    rows[0]["human_preference"] = "maybe"
    with open(sheet, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    code, _, err = run_cli("annotate", "import", "--sheet", sheet, "--samples", s)
    assert code == 2 and "'maybe' is not a preference" in err


def test_red_team_prompts_hold_apart_the_audited_hh_pairs(shared_data):
    from hrlaif.harness.run_judges import hh_audit_items
    from hrlaif.trainers.feedback.redteam_stage import RedteamConfig, harmful_prompts

    cfg = RunConfig(data_dir=str(shared_data))
    audited = {h["id"] for h in hh_audit_items(cfg)}
    assert len(audited) == cfg.label.hh_limit
    rows = harmful_prompts(RedteamConfig(data_dir=str(shared_data), limit=4), audited)
    by_source = {}
    for r in rows:
        by_source.setdefault(r["source"], []).append(r["id"])
    assert {s: len(v) for s, v in by_source.items()} == {"harmbench": 4, "advbench": 4, "hh-rlhf": 4}
    assert not {r["id"].removeprefix("redteam:") for r in rows} & audited  # never trained on, then audited
    assert len(harmful_prompts(RedteamConfig(limit=5))) == 5  # the embedded set by default
