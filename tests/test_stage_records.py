"""Stages as records (hrlaif/harness/stages.py): each stage's fingerprint is what it reads, resolved.

With fake stage functions (no models): changing one setting re-runs exactly the stages that read
it and their dependants (every field of the run config, one at a time); the stale-drift bug
(PPO's drift evaluation reads eval.max_gen_toks / eval.precision, which the old fingerprint left
out); the real stage functions, with their heavy callees stubbed, read nothing outside their
resolved config; a new stage is one record plus its function."""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from hrlaif.core.store import write_json, write_jsonl
from hrlaif.harness import stages
from hrlaif.harness.config import RunConfig
from hrlaif.harness.pipeline import run_pipeline
from hrlaif.harness.stages import RECORDS, Stage, instances, pick, plain

RAN = re.compile(r"\] (\S+)\s+running \.\.\.")


def _fake(c, out: Path, *inputs) -> Path:
    (out / "out.txt").write_text("x")
    return out / "out.txt"


FAKES = tuple(replace(r, fn=_fake) for r in RECORDS)


def _ran(cfg: RunConfig, run: Path, capsys, records=FAKES, **kw) -> list[str]:
    capsys.readouterr()
    run_pipeline(cfg, run, records=records, **kw)
    return RAN.findall(capsys.readouterr().out)


def _dependants(cfg: RunConfig, names: set[str]) -> set[str]:
    out = set(names)
    for i in instances(cfg):  # in order: an input is decided before its consumers
        if any(n in out for n in i.inputs if n):
            out.add(i.name)
    return out


def _readers(before: RunConfig, after: RunConfig) -> set[str]:
    """The stages whose resolved config differs between two run configs."""
    return {i.name for i, j in zip(instances(before), instances(after))
            if plain(i.resolve(before)) != plain(j.resolve(after)) or i.name != j.name}


def _candidates(v, meta: dict, tmp: Path) -> list:
    """Other values a setting could take, the likeliest valid first."""
    if meta.get("choices"):
        return [c for c in meta["choices"] if c != v]
    if isinstance(v, bool):
        return [not v]
    if isinstance(v, (int, float)):
        return [v + 1, v * 2, v / 2, v - 1]
    if isinstance(v, str):
        return [v + "x", str(tmp)]
    if isinstance(v, list):
        return [v[:-1], v + v[:1], [7], ["mmlu"]]
    if isinstance(v, dict):
        return [v | {"x": 1}, {"mmlu": 1}, {}]
    if isinstance(v, tuple):
        return [v[:-1]]
    if v is None:
        f = tmp / "file.jsonl"
        f.write_text("{}\n")
        return [str(f), str(tmp), 1, 0.5, "x", ["x"]]
    raise TypeError(v)


def _changed(obj, name: str, f, tmp: Path):
    old = getattr(obj, name)
    for c in _candidates(old, f.metadata, tmp):
        if c == old:
            continue
        try:
            return replace(obj, **{name: c})
        except Exception:  # validated on construction: try the next value
            continue
    return None


def _fields(cfg: RunConfig, tmp: Path):
    """(path, changed RunConfig) for every user-settable leaf of the run config that takes another value."""
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if not dataclasses.is_dataclass(v):
            new = _changed(cfg, f.name, f, tmp)
            if new is not None:
                yield f.name, new
            continue
        for g in dataclasses.fields(v):
            if g.metadata.get("pipeline"):
                continue  # set by the pipeline, refused in a run config
            new = _changed(v, g.name, g, tmp)
            if new is not None:
                yield f"{f.name}.{g.name}", replace(cfg, **{f.name: new})


def test_stale_drift_eval_settings_rerun_ppo(tmp_path, capsys):
    """The stale-drift bug: PPO's drift log is evaluated at eval.precision and eval.max_gen_toks."""
    cfg = RunConfig()
    _ran(cfg, tmp_path, capsys)
    for changed in (replace(cfg, eval=replace(cfg.eval, max_gen_toks={"gsm8k": 64})),
                    replace(cfg, eval=replace(cfg.eval, precision="fp32" if cfg.eval.precision != "fp32" else "bf16"))):
        ran = _ran(changed, tmp_path, capsys)
        assert {"ppo_rlaif", "ppo_hrlaif"} <= set(ran), ran
        assert not {"sft", "sample", "label_basic", "rm_basic", "rm_hybrid"} & set(ran)
        cfg = changed


# What some settings must re-run (directly; their dependants follow): a spec, beside the field walk.
EXPECTED = {
    "eval.max_gen_toks": {"ppo_rlaif", "ppo_hrlaif", "eval_sft", "eval_rlaif", "eval_hrlaif"},
    "eval.precision": {"ppo_rlaif", "ppo_hrlaif", "eval_sft", "eval_rlaif", "eval_hrlaif"},
    "eval.limit": {"eval_sft", "eval_rlaif", "eval_hrlaif"},
    "eval_judge.model": {"ppo_rlaif", "ppo_hrlaif", "eval_sft", "eval_rlaif", "eval_hrlaif"},
    "judge.model": {"label_basic", "label_hybrid", "eval_sft", "eval_rlaif", "eval_hrlaif"},
    "judge.workers": {"label_basic", "label_hybrid"},
    "harm_judge.model": {"redteam", "label_basic", "label_hybrid"},
    "reward_model.heldout_frac": {"heldout"},
    "reward_model.lr": {"rm_basic", "rm_hybrid"},
    "label.hh_limit": {"redteam", "heldout", "label_basic", "label_hybrid"},
    "sample.prompts": {"sample", "ppo_rlaif", "ppo_hrlaif"},
    "ppo.kl_coef": {"ppo_rlaif", "ppo_hrlaif"},
    "sft.lr": {"sft"},
    "seeds": {"rm_basic", "rm_hybrid", "ppo_rlaif", "ppo_hrlaif"},
}


def _plain_write(path, obj) -> None:
    Path(path).write_text(json.dumps(obj, default=str))


def test_each_setting_reruns_its_readers_and_only_their_dependants(tmp_path, capsys, monkeypatch):
    import hrlaif.harness.pipeline

    monkeypatch.setattr(hrlaif.harness.pipeline, "_versions", dict)  # 150 runs: skip package lookups and fsyncs
    monkeypatch.setattr(hrlaif.harness.pipeline, "write_json", _plain_write)
    base_cfg = RunConfig()
    base = tmp_path / "base"
    _ran(base_cfg, base, capsys)
    seen, table = set(), {}
    tried = set()
    for n, (path, cfg) in enumerate(_fields(base_cfg, tmp_path)):
        readers = _readers(base_cfg, cfg)
        # One run per distinct set of readers (same changed fingerprints, same runner behaviour),
        # and one for each setting of EXPECTED.
        if frozenset(readers) not in tried or path in EXPECTED:
            tried.add(frozenset(readers))
            run = tmp_path / f"r{n}"
            shutil.copytree(base, run, ignore=shutil.ignore_patterns(".lock"))
            ran = set(_ran(cfg, run, capsys)) - {"report"}  # the report is rebuilt on every run
            # the stages that read it, and every stage downstream of them: no more, no fewer
            assert ran == _dependants(cfg, readers) - {"report"}, path
        if path in EXPECTED:
            assert readers - {"report"} == EXPECTED[path], path
        seen.add(path)
        table[path] = sorted(readers)
    assert set(EXPECTED) <= seen
    assert sum(bool(v) for v in table.values()) > 100  # nearly every setting is read by some stage
    assert len(tried) > 15
    print("\n".join(f"{k}: {', '.join(v) or '(no stage)'}" for k, v in table.items()))


def test_stage_functions_read_only_their_resolved_config(tmp_path, monkeypatch, capsys):
    """The real stage functions (heavy callees stubbed) through the View: reading a setting outside
    the record's resolved config raises; what the callees receive is the resolved config."""
    import hrlaif.evalsets.runner
    import hrlaif.reports.build
    import hrlaif.trainers.feedback.label_stage
    import hrlaif.trainers.feedback.redteam_stage
    import hrlaif.trainers.ppo
    import hrlaif.trainers.reward_model
    import hrlaif.trainers.sampling
    import hrlaif.trainers.sft

    got = {}

    def keep(name, ret):
        def f(*a, **kw):
            got[name] = (a, kw)
            return ret(*a, **kw)
        return f

    def samples(c):
        write_jsonl(c.out, [{"id": f"p{i}", "prompt": "q", "category": "chat", "responses": ["a", "b"]}
                            for i in range(4)])
        return c.out

    def evaluated(model, out, ecfg, **kw):
        Path(out).mkdir(parents=True, exist_ok=True)
        write_json(Path(out) / "results.json", {"benchmarks": {}})

    monkeypatch.setattr(hrlaif.trainers.sft, "train_sft", keep("sft", lambda c: c.out))
    monkeypatch.setattr(hrlaif.trainers.sampling, "sample_responses", keep("sample", samples))
    monkeypatch.setattr(hrlaif.trainers.feedback.redteam_stage, "run_redteam",
                        keep("redteam", lambda c, j, exclude_ids: Path(c.out) / "labels.jsonl"))
    monkeypatch.setattr(hrlaif.trainers.feedback.label_stage, "label_samples", keep("label", lambda c, j, h: None))
    monkeypatch.setattr(hrlaif.trainers.reward_model, "train_reward_model", keep("rm", lambda c: c.out))
    monkeypatch.setattr(hrlaif.trainers.ppo, "train", keep("ppo", lambda c, **kw: None))
    monkeypatch.setattr(hrlaif.evalsets.runner, "evaluate_to_dir", keep("eval", evaluated))
    monkeypatch.setattr(hrlaif.reports.build, "build_report", lambda run_dir, **kw: Path(run_dir) / "report")
    cfg = RunConfig(seed=5)
    cfg = replace(cfg, eval=replace(cfg.eval, max_gen_toks={"gsm8k": 33}, precision="fp32"))
    run_pipeline(cfg, tmp_path)
    (pcfg,), kw = got["ppo"]
    drift = kw["evaluate_fn"].keywords
    assert drift["max_gen_toks"] == {"gsm8k": 33} and drift["precision"] == "fp32" and pcfg.seed == 5
    assert got["rm"][0][0].seed == 5 and got["rm"][0][0].heldout_frac == 0.0
    assert got["eval"][0][2].seed == 5 and got["eval"][1]["labeller"].identity() == cfg.judge.identity()

    # a function reading beyond its record is stopped, with the stage and the setting named
    def nosy(c, out, *inputs):
        return c.label.mode

    bad = tuple(replace(r, fn=nosy) if r.name == "sft" else r for r in FAKES)
    with pytest.raises(AttributeError, match="stage sft reads cfg.label, which its record does not resolve"):
        run_pipeline(cfg, tmp_path / "nosy", records=bad)


def _export(c, out: Path, results: Path) -> Path:
    """A new stage for the test: copies each variant's results.json, keeping `limit` items."""
    (out / "export.json").write_text(f'{{"limit": {c.eval.limit}, "from": "{results}"}}')
    write_json(out / "usage.json", {"judge_usage": {"evaluation": {"requests": 3}}})
    return out / "export.json"


NEW = Stage("export_{variant}{s}", _export, ("eval_{variant}{s}",), per="seed", plan="export of {VARIANT}'s results",
            config=lambda cfg, seed: {"eval": pick(cfg.eval, "limit")}, usage="usage.json")


def test_adding_a_stage_is_one_record_and_its_function(tmp_path, capsys, monkeypatch):
    """Files a new stage touches: 1 (hrlaif/harness/stages.py: the `export` function + its record in
    RECORDS). The order, --from/--only, the fingerprint, the seeds, the dry run's stage list and the
    judge usage table all follow from the record."""
    records = tuple(replace(r, fn=_fake) for r in RECORDS[:-1]) + (NEW, replace(RECORDS[-1], fn=stages.report))
    monkeypatch.setattr(stages, "RECORDS", records)  # the one edit: the record (and its function above)
    import hrlaif.reports.build
    monkeypatch.setattr(hrlaif.reports.build, "build_report", lambda run_dir, **kw: Path(run_dir) / "report")
    cfg = replace(RunConfig(), seeds=[1, 2])
    names = [i.name for i in instances(cfg)]
    assert names[-5:] == ["export_rlaif", "export_hrlaif", "export_rlaif_s2", "export_hrlaif_s2", "report"]
    assert set(_ran(cfg, tmp_path, capsys, records=None)) >= {"export_rlaif", "export_hrlaif_s2"}
    assert '"from": "' + str(tmp_path / "eval_hrlaif_s2" / "out.txt") in (
        tmp_path / "export_hrlaif_s2" / "export.json").read_text()
    usage = (tmp_path / "judge_usage.json").read_text()
    assert '"export_rlaif_s2"' in usage and '"requests": 12' in usage  # 4 export stages x 3
    # its fingerprint is its record's config: eval.limit re-runs it (and the evaluations), not PPO
    cfg2 = replace(cfg, eval=replace(cfg.eval, limit=3))
    ran = _ran(cfg2, tmp_path, capsys, records=None)
    assert "export_rlaif_s2" in ran and "ppo_rlaif" not in ran
    assert _ran(cfg2, tmp_path, capsys, records=None, from_stage="export_hrlaif") == [
        "export_hrlaif", "export_rlaif_s2", "export_hrlaif_s2", "report"]
    # the dry run lists it from the same record
    from hrlaif.harness.dryrun import dry_run

    monkeypatch.setattr("hrlaif.harness.dryrun.plan", lambda cfg: [])
    dry_run(cfg2, "test")
    out = capsys.readouterr().out
    assert re.search(r"\d+ export_hrlaif_s2\s+export of HRLAIF's results \(seed 2\)", out)
    # and no other module spells the per-stage lists it would have had to join
    src = Path(stages.__file__).parent
    assert "USAGE_SOURCES" not in (src / "run_judges.py").read_text()
    assert "STAGE_PLAN" not in (src / "dryrun.py").read_text()
    assert "ppo_rlaif" not in (src / "pipeline.py").read_text()


def test_dry_run_and_judge_bill_scale_with_seeds(run_cli):
    """Per-seed stages (reward model, PPO, evaluation of each variant) are planned and billed once
    per training seed; the shared stages (SFT, samples, labels, eval_sft) once."""
    from hrlaif.harness.config import load_config, with_seeds
    from hrlaif.harness.dryrun import count, plan

    one = load_config(None)
    three = with_seeds(one, "1,2,3")
    req = {}
    for name, cfg in (("one", one), ("three", three)):
        rows = count(cfg, plan(cfg))
        req[name] = {k: sum(r["requests"] for r in rows if r["stage"].startswith(k))
                     for k in ("label_", "redteam", "ppo_", "eval_sft", "eval_rlaif", "eval_hrlaif")}
    assert req["one"]["ppo_"] > 0 and req["one"]["eval_hrlaif"] > 0
    for k in ("label_", "redteam", "eval_sft"):
        assert req["three"][k] == req["one"][k], k
    for k in ("ppo_", "eval_rlaif", "eval_hrlaif"):
        assert req["three"][k] == 3 * req["one"][k], k
    code, out, err = run_cli("run", "--seeds", "1,2,3", "--dry-run")
    assert code == 0, err
    assert "3 training seeds 1, 2, 3" in out and re.search(r"\d+ ppo_hrlaif_s3\s+PPO against rm_hybrid_s3", out)
    code, out, err = run_cli("run", "--seeds", "2,2", "--dry-run")
    assert code == 2 and err.strip().endswith("--seeds: seeds must be distinct (got [2, 2])")
