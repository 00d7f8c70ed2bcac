"""Judge throughput against the embedded llama.cpp server: judgements/s, cold vs warm cache.

    .venv/bin/python bench/label_throughput.py [--pairs 12] [--concurrency 1 2] [--weights q4_1 f16 bf16] [--out FILE]

`--weights` serves each weight format of the embedded judge in turn (the shipped Q4_1 file, or a float
copy of it), to find the fastest on this host; the figures name the host's CPU flags and the ISA
llama.cpp was compiled for. `PYTHONPATH=DIR` with DIR from `bench/avx2_llama.sh` measures an
AVX2-only host's llama.cpp from any x86 host.

Each pair is judged in both slot orders (2 judgements), as basic labelling does. The cold
pass uses an empty request cache; the warm pass repeats the same requests, which the
cache answers without HTTP. Prompts come from the embedded feedback prompts (with a
short correct and a verbose wrong response) so request sizes are realistic.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hrlaif.core.store import read_jsonl, write_json  # noqa: E402
from hrlaif.judges import prompts as P  # noqa: E402
from hrlaif.judges.client import Judge  # noqa: E402
from hrlaif.judges.server import ServerConfig, embedded_judge  # noqa: E402


def make_batch(n_pairs: int) -> list[list[dict]]:
    src = ROOT / "hrlaif" / "trainers" / "data" / "feedback_prompts.jsonl"
    rows = read_jsonl(src) if src.exists() else [
        {"prompt": f"What is {i} + {i + 1}?", "std_answer": str(2 * i + 1)} for i in range(n_pairs)]
    batch = []
    for r in (rows * (n_pairs // max(len(rows), 1) + 1))[:n_pairs]:
        good = f"The answer is {r.get('std_answer') or 'as follows'}."
        bad = "Let me think about this carefully, step by step, before answering. " * 2 + "The answer is 0."
        batch += [P.pairwise_messages(r["prompt"], good, bad), P.pairwise_messages(r["prompt"], bad, good)]
    return batch


def timed(judge: Judge, batch) -> dict:
    before = judge.stats.http_calls
    t0 = time.perf_counter()
    labels = judge.choose_many(batch)
    dt = time.perf_counter() - t0
    return {"judgements": len(batch), "seconds": round(dt, 3), "judgements_per_s": round(len(batch) / dt, 3),
            "http_calls": judge.stats.http_calls - before,
            "invalid": sum(1 for lab, _ in labels if lab == "invalid"),
            "first_slot_share": round(sum(1 for lab, _ in labels if lab == "A") / len(labels), 3),
            "choices": [lab for lab, _ in labels]}  # formats compared choice by choice (agreement below)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=12, help="pairs per pass (x2 judgements)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--weights", nargs="+", default=["auto"], help="embedded judge weight formats to serve in turn")
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args()
    import llama_cpp

    from hrlaif.core.hardware import cpu_flags
    from hrlaif.judges import server as judge_server

    llama_isa = llama_cpp.llama_print_system_info().decode().strip()
    results = {"pairs": args.pairs, "host_flags": sorted(cpu_flags()), "llama_cpp": llama_isa, "runs": []}
    print(f"host flags: {' '.join(f for f in sorted(cpu_flags()) if f.startswith(('avx', 'amx', 'fma', 'f16c')))}\n"
          f"llama.cpp ({llama_cpp.__file__}): {llama_isa}", flush=True)
    for weights in args.weights:
        with tempfile.TemporaryDirectory() as tmp, \
                embedded_judge(ServerConfig(cache_dir=str(Path(tmp) / "c0"), weights=weights)) as cfg:
            # Warm the server once (first request allocates buffers) outside the timings.
            Judge(cfg).chat(P.pairwise_messages("warm-up", "a", "b"), max_tokens=1)
            for c in args.concurrency:
                cfg.workers = c
                cfg.cache_dir = str(Path(tmp) / f"cache-c{c}")  # a fresh, empty cache per setting
                batch = make_batch(args.pairs)
                cold = timed(Judge(cfg), batch)
                warm = timed(Judge(cfg), batch)  # new Judge, same disk cache
                results["runs"].append({"weights": weights, "server_startup_s": round(judge_server.last_startup_s, 2),
                                        "concurrency": c, "cold": cold, "warm": warm})
                print(f"weights {weights}, concurrency {c}: cold {cold['judgements_per_s']:.2f} judgements/s "
                      f"({cold['judgements']} in {cold['seconds']:.1f}s), warm {warm['judgements_per_s']:.0f}/s "
                      f"({warm['http_calls']} HTTP calls)", flush=True)
    runs = [r for r in results["runs"] if r["concurrency"] == args.concurrency[0]]
    for r in runs[1:]:  # the same requests served by each format: how often the choice is the first format's
        a, b = runs[0]["cold"]["choices"], r["cold"]["choices"]
        r["agreement_with_" + runs[0]["weights"]] = round(sum(x == y for x, y in zip(a, b)) / len(a), 3)
        print(f"{r['weights']} picks what {runs[0]['weights']} picks on {sum(x == y for x, y in zip(a, b))}/{len(a)} "
              "judgements", flush=True)
    print(json.dumps(results, indent=2))
    if args.out:
        write_json(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
