"""`hrlaif annotate export|import`: the human round trips.

With --eval (satisfaction and win ratio):
export: a CSV sheet from an eval dir's satisfaction samples, one row per prompt, with the
        model's response, the baseline's (if judged), and empty verdict columns. The A/B
        order is shuffled per row (seeded) so raters cannot learn which side is the model.
import: reads the filled sheet, reports the human satisfaction rate and win ratio with
        95% CIs, and their agreement with the AI judge (Cohen's kappa); records them in the eval
        dir as the benchmarks human_satisfaction / human_win_ratio (results.json + samples/), so
        the run report and `hrlaif compare` show them, paired between variants.
With --samples (human truth for the label-accuracy table, Table 1):
export: one row per pair of a prompt's sampled responses (A/B order shuffled, seeded), with an
        empty preference column.
import: reads the filled sheet into human_pairs.jsonl ({id, pairs: [[better, worse]], ties}),
        which `label.human_pairs` (or `hrlaif label --human-pairs`) scores both labellers against.
"""
from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

from hrlaif.core import stats
from hrlaif.core.errors import UserError
from hrlaif.core.layout import EvalDir
from hrlaif.core.store import read_jsonl, write_json, write_text

SAT_COL, PREF_COL = "human_satisfied", "human_preference"
YES, NO = {"yes", "y", "1", "true", "是"}, {"no", "n", "0", "false", "否"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    e = sub.add_parser("export", help="write a CSV sheet for human raters")
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--eval", help="eval output dir with samples/satisfaction.jsonl")
    src.add_argument("--samples", help="samples.jsonl whose response pairs raters compare (Table 1 truth)")
    e.add_argument("--out", required=True, help="CSV file to write")
    e.add_argument("--seed", type=int, default=0, help="seed of the A/B shuffle")
    e.add_argument("--limit", type=int, default=None, help="with --samples: only the first N prompts")
    i = sub.add_parser("import", help="read a filled sheet and compare with the AI judge")
    i.add_argument("--sheet", required=True)
    src = i.add_mutually_exclusive_group(required=True)
    src.add_argument("--eval", help="the eval dir the sheet was exported from")
    src.add_argument("--samples", help="the samples.jsonl a pairs sheet was exported from")
    i.add_argument("--out", default=None, help="JSON report (default: <eval>/human_agreement.json); with --samples: "
                                               "human_pairs.jsonl (default: beside the sheet)")


def _samples(eval_dir: str) -> list[dict]:
    p = Path(eval_dir) / "samples" / "satisfaction.jsonl"
    if not p.exists():
        raise UserError(f"{p} not found: run `hrlaif eval --benchmarks satisfaction` first")
    return read_jsonl(p)


def export(args) -> int:
    rows = _samples(args.eval)
    rng = random.Random(args.seed)
    pairwise = any("baseline_output" in r for r in rows)
    cols = ["doc_id", "category", "prompt", "reference", "response", SAT_COL]
    if pairwise:
        cols += ["response_A", "response_B", PREF_COL, "_a_is_model"]
    lines = []
    for r in rows:
        line = {"doc_id": r["doc_id"], "category": r["group"], "prompt": r["prompt"],
                "reference": r.get("target", ""), "response": r["output"], SAT_COL: ""}
        if pairwise:
            a_is_model = rng.random() < 0.5
            line["response_A"], line["response_B"] = ((r["output"], r["baseline_output"]) if a_is_model
                                                      else (r["baseline_output"], r["output"]))
            line[PREF_COL], line["_a_is_model"] = "", int(a_is_model)
        lines.append(line)
    _write_csv(args.out, cols, lines)
    print(f"wrote {len(lines)} rows to {args.out}: fill '{SAT_COL}' with yes/no"
          + (f" and '{PREF_COL}' with A/B/tie" if pairwise else ""))
    return 0


def _read_sheet(path: str, required: tuple[str, ...] = ("doc_id", SAT_COL)) -> list[dict]:
    p = Path(path)
    if not p.exists():
        raise UserError(f"sheet not found: {path}")
    try:
        with open(p, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            fields = reader.fieldnames or []
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text")
    except csv.Error as e:
        raise UserError(f"{path} is not a valid CSV: {e}")
    missing = [c for c in required if c not in fields]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}")
    return rows


def _verdict(value: str, where: str) -> int | None:
    v = (value or "").strip().lower()
    if not v:
        return None
    if v in YES:
        return 1
    if v in NO:
        return 0
    raise UserError(f"{where}: '{value}' is not a verdict (use yes/no)")


def _preference(value: str, a_is_model: str, where: str) -> float | None:
    v = (value or "").strip().lower()
    if not v:
        return None
    if v not in ("a", "b", "tie"):
        raise UserError(f"{where}: '{value}' is not a preference (use A, B or tie)")
    if v == "tie":
        return 0.5
    return 1.0 if (v == "a") == (a_is_model.strip() == "1") else 0.0


def _kappa(a: list, b: list) -> float | None:
    if len(a) < 2:
        return None
    from sklearn.metrics import cohen_kappa_score
    if len(set(a) | set(b)) < 2:  # kappa is undefined when everyone always agrees on one label
        return 1.0 if a == b else None
    return float(cohen_kappa_score([str(x) for x in a], [str(x) for x in b]))


def import_(args) -> int:
    sheet = _read_sheet(args.sheet)
    ai = {r["doc_id"]: r for r in _samples(args.eval)}
    sat_h, sat_pairs, pref_h, pref_pairs = [], [], [], []
    items: dict[str, list[dict]] = {HUMAN_SAT: [], HUMAN_WIN: []}  # per-prompt human verdicts, paired by doc_id
    for n, row in enumerate(sheet, start=2):
        where = f"{args.sheet}:{n}"
        if row["doc_id"] not in ai:
            raise UserError(f"{where}: doc_id {row['doc_id']!r} is not in {args.eval}")
        s = _verdict(row.get(SAT_COL, ""), where)
        if s is not None:
            sat_h.append(s)
            items[HUMAN_SAT].append({"doc_id": row["doc_id"], "group": row.get("category") or None, "score": s})
            if ai[row["doc_id"]].get("score") is not None:
                sat_pairs.append((s, int(ai[row["doc_id"]]["score"])))
        if PREF_COL in row:
            if "_a_is_model" not in row:
                raise UserError(f"{args.sheet}: missing column _a_is_model (re-export the sheet)")
            p = _preference(row.get(PREF_COL, ""), row["_a_is_model"], where)
            if p is not None:
                pref_h.append(p)
                items[HUMAN_WIN].append({"doc_id": row["doc_id"], "group": row.get("category") or None, "score": p})
                if ai[row["doc_id"]].get("win") is not None:
                    pref_pairs.append((p, ai[row["doc_id"]]["win"]))
    if not sat_h and not pref_h:
        raise UserError(f"{args.sheet}: no verdicts filled in")
    report = {
        "human_satisfaction": stats.mean_ci(sat_h),
        "ai_satisfaction_same_items": stats.mean_ci([b for _, b in sat_pairs]),
        "satisfaction_kappa": _kappa([a for a, _ in sat_pairs], [b for _, b in sat_pairs]),
        "satisfaction_agreement": (sum(a == b for a, b in sat_pairs) / len(sat_pairs)) if sat_pairs else None,
        "n_compared": len(sat_pairs),
    }
    if pref_h:
        report["human_win_ratio"] = stats.win_ratio(pref_h)
        report["preference_kappa"] = _kappa([a for a, _ in pref_pairs], [b for _, b in pref_pairs])
        report["n_preference_compared"] = len(pref_pairs)
    out = args.out or str(Path(args.eval) / "human_agreement.json")
    write_json(out, report)
    record_human(Path(args.eval), report, items, args.sheet)
    hs = report["human_satisfaction"]
    print(f"human satisfaction {100 * hs['score']:.1f}% [{100 * hs['ci95'][0]:.1f}, {100 * hs['ci95'][1]:.1f}] "
          f"n={hs['n']}; kappa vs AI judge: {report['satisfaction_kappa']}")
    if pref_h:
        w = report["human_win_ratio"]
        print(f"human win ratio {100 * w['score']:.1f}% (W/T/L {w['wins']}/{w['ties']}/{w['losses']}); "
              f"kappa vs AI judge: {report['preference_kappa']}")
    print(f"wrote {out}")
    return 0


HUMAN_SAT, HUMAN_WIN = "human_satisfaction", "human_win_ratio"


def record_human(eval_dir: Path, report: dict, items: dict[str, list[dict]], sheet: str) -> None:
    """The human verdicts as benchmarks of the evaluation (results.json entries + samples/<name>.jsonl),
    so the report and `hrlaif compare` show them in rows of their own, pair them by doc_id between
    variants like any benchmark (paired Δ), and give κ against the AI judge. Not judge-graded, so
    never self-graded."""
    from hrlaif.core.store import read_json, write_jsonl

    ev = EvalDir(eval_dir)
    if not ev.results.exists():
        print(f"{eval_dir} has no {ev.results.name}: the human verdicts are not recorded as its benchmarks")
        return
    res = read_json(ev.results)
    kappa = {HUMAN_SAT: report.get("satisfaction_kappa"), HUMAN_WIN: report.get("preference_kappa")}
    compared = {HUMAN_SAT: report.get("n_compared"), HUMAN_WIN: report.get("n_preference_compared")}
    for name, rows in items.items():
        if not rows:
            continue
        stat = report["human_satisfaction"] if name == HUMAN_SAT else report["human_win_ratio"]
        write_jsonl(ev.sample_file(name), rows)
        entry = {"metric": "satisfaction_rate" if name == HUMAN_SAT else "win_ratio", "score": stat["score"],
                 "n": stat["n"], "ci95": stat["ci95"], "unit": "%", "higher_is_better": True, "human": True,
                 "title": "Human satisfaction" if name == HUMAN_SAT else "Human win ratio vs baseline",
                 "against_baseline": name == HUMAN_WIN, "source": str(sheet),
                 "definition": ("share of prompts human raters judged satisfying (hrlaif annotate)" if name == HUMAN_SAT
                                else "(wins + 0.5 ties) / prompts, human raters, vs the evaluation's baseline model"),
                 "extra": {"kappa_vs_ai_judge": kappa[name], "n_compared": compared[name],
                           **({k: stat[k] for k in ("wins", "ties", "losses")} if name == HUMAN_WIN else {})}}
        res["benchmarks"][name] = entry
    write_json(ev.results, res)


# -- Table 1: human preferences between sampled responses ---------------------------------
PAIR_COLS = ["id", "category", "prompt", "response_A", "response_B", PREF_COL, "_a_index", "_b_index"]


def _samples_by_id(path: str) -> dict[str, dict]:
    p = Path(path)
    if not p.exists():
        raise UserError(f"samples file not found: {path}")
    rows = read_jsonl(p)
    if not rows:
        raise UserError(f"{path} has no samples")
    return {str(r["id"]): r for r in rows}


def export_pairs(args) -> int:
    import itertools

    samples = list(_samples_by_id(args.samples).values())[:args.limit]
    rng = random.Random(args.seed)
    lines = []
    for s in samples:
        for i, j in itertools.combinations(range(len(s["responses"])), 2):
            a, b = (i, j) if rng.random() < 0.5 else (j, i)
            lines.append({"id": s["id"], "category": s.get("category", ""), "prompt": s["prompt"],
                          "response_A": s["responses"][a], "response_B": s["responses"][b], PREF_COL: "",
                          "_a_index": a, "_b_index": b})
    _write_csv(args.out, PAIR_COLS, lines)
    print(f"wrote {len(lines)} pairs of {len(samples)} prompts to {args.out}: fill '{PREF_COL}' with A/B/tie")
    return 0


def import_pairs(args) -> int:
    from hrlaif.core.store import write_jsonl

    samples = _samples_by_id(args.samples)
    out: dict[str, dict] = {}
    filled = 0
    for n, row in enumerate(_read_sheet(args.sheet, ("id", PREF_COL, "_a_index", "_b_index")), start=2):
        where = f"{args.sheet}:{n}"
        sid = row["id"]
        if sid not in samples:
            raise UserError(f"{where}: id {sid!r} is not in {args.samples}")
        try:
            a, b = int(row["_a_index"]), int(row["_b_index"])
        except ValueError:
            raise UserError(f"{where}: _a_index/_b_index must be response indices (re-export the sheet)")
        if not (0 <= a < len(samples[sid]["responses"]) and 0 <= b < len(samples[sid]["responses"])):
            raise UserError(f"{where}: response index out of range for id {sid!r} (a sheet from another run?)")
        v = (row.get(PREF_COL) or "").strip().lower()
        if not v:
            continue
        if v not in ("a", "b", "tie"):
            raise UserError(f"{where}: '{row[PREF_COL]}' is not a preference (use A, B or tie)")
        filled += 1
        rec = out.setdefault(sid, {"id": sid, "pairs": [], "ties": []})
        if v == "tie":
            rec["ties"].append([a, b])
        else:
            rec["pairs"].append([a, b] if v == "a" else [b, a])
    if not filled:
        raise UserError(f"{args.sheet}: no preferences filled in")
    dest = args.out or str(Path(args.sheet).with_name("human_pairs.jsonl"))
    write_jsonl(dest, list(out.values()))
    n_pairs = sum(len(r["pairs"]) for r in out.values())
    print(f"{filled} preferences ({n_pairs} pairs, {filled - n_pairs} ties) over {len(out)} prompts -> {dest}; "
          f"set label.human_pairs: {dest} (or hrlaif label --human-pairs) to score the labels against them")
    return 0


def _write_csv(path: str, cols: list[str], lines: list[dict]) -> None:
    import io
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    w.writerows(lines)
    write_text(path, buf.getvalue())


def run(args) -> int:
    if getattr(args, "samples", None):
        return export_pairs(args) if args.action == "export" else import_pairs(args)
    return export(args) if args.action == "export" else import_(args)
