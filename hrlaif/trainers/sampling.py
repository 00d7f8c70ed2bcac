"""Sample K responses per prompt from a checkpoint -> samples.jsonl (docs/FORMATS.md).

    path = sample_responses(SampleConfig(model="runs/x/sft", k=4, out="runs/x/samples.jsonl"))

Prompts are rendered with the tokenizer's chat template (user turn + generation prompt),
left-padded into batches of `batch_size` prompts, and each prompt gets K continuations
from one `generate(..., do_sample=True)` call over its K copies, whose prompt was computed
once and its cache repeated K times (`prefill_once`). The global RNGs
are seeded once (hrlaif.core.seeding), so a fixed (seed, batch_size, prompts, model) gives identical output.
`finished[i]` says whether response i reached an end-of-sequence token before
`max_new_tokens` ran out. The model runs on the resolved `device` with bf16 weights when
`precision` resolves to bf16 (hrlaif/trainers/precision.py); samples.meta.json records both.
"""
from __future__ import annotations

import time
from pathlib import Path

from hrlaif.trainers.configs import SampleConfig


def stratified(prompts: list[dict], limit: int) -> list[dict]:
    """The first `limit` prompts taken round-robin over categories (file order within each),
    so a small run still covers verifiable, open-ended and harmlessness prompts."""
    by_cat: dict[str, list[dict]] = {}
    for p in prompts:
        by_cat.setdefault(str(p.get("category")), []).append(p)
    out, depth = [], 0
    while len(out) < min(limit, len(prompts)):
        for cat in by_cat:
            if depth < len(by_cat[cat]) and len(out) < limit:
                out.append(by_cat[cat][depth])
        depth += 1
    return out


def prefill_once(model, ids, mask, k: int, cache) -> None:
    """Fill `cache` with every prompt but its last token, computed once per prompt (the decoder alone: no
    logits) and repeated for its `k` rows, in `generate`'s prompt-major order. `generate` then runs only
    the last token of each row. `generate(num_return_sequences=k)` would repeat the prompts first and
    compute each prefill k times: at the quickstart's K=4 most of the sample stage's arithmetic."""
    from hrlaif.core.decoding import cache_kwarg
    from hrlaif.core.tensors import position_ids

    decoder = model.get_decoder()
    # Each row's own positions (left padding skipped), as generate gives the last token its position from
    # the mask when it continues a cache.
    decoder(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=position_ids(mask[:, :-1]),
            use_cache=True, **cache_kwarg(decoder, cache))
    cache.batch_repeat_interleave(k)


def generate_k(model, tok, prompts: list[str], cfg: SampleConfig) -> list[tuple[list[str], list[bool]]]:
    """Sample cfg.k responses for each prompt text (already-loaded model). -> [(responses, finished)]."""
    import torch
    from tqdm.auto import tqdm

    from hrlaif.core.decode_step import decoding
    from hrlaif.core.decoding import growing_cache
    from hrlaif.core.models import eos_ids
    from hrlaif.trainers.data_formats import render_prompt

    stop = set(eos_ids(model, tok))
    tok.padding_side = "left"  # generation appends on the right, so prompts must end flush
    out = []
    for b in tqdm(range(0, len(prompts), cfg.batch_size), desc="sample", unit="batch", dynamic_ncols=True):
        texts = [render_prompt(tok, p) for p in prompts[b:b + cfg.batch_size]]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        ids, mask = enc["input_ids"], enc["attention_mask"]
        # Decoding-friendly linears and steps for the batch's rows, an in-place KV cache (hrlaif.core.decode_step).
        with torch.no_grad(), decoding(model, len(texts) * cfg.k):
            cache = growing_cache(model, cfg.max_new_tokens + 1)
            if ids.shape[1] > 1:
                prefill_once(model, ids, mask, cfg.k, next(iter(cache.values())))
            gen = model.generate(input_ids=ids.repeat_interleave(cfg.k, 0),
                                 attention_mask=mask.repeat_interleave(cfg.k, 0), do_sample=True,
                                 temperature=cfg.temperature, top_p=cfg.top_p, top_k=0,
                                 max_new_tokens=cfg.max_new_tokens, pad_token_id=tok.pad_token_id,
                                 eos_token_id=sorted(stop), **cache)
        new = gen[:, ids.shape[1]:].tolist()
        for p in range(len(texts)):  # generate() orders outputs prompt-major
            responses, finished = [], []
            for seq in new[p * cfg.k:(p + 1) * cfg.k]:
                end = next((i for i, t in enumerate(seq) if t in stop), None)
                finished.append(end is not None)
                responses.append(tok.decode(seq[:end] if end is not None else seq, skip_special_tokens=True))
            out.append((responses, finished))
    return out


def sample_responses(cfg: SampleConfig) -> Path:
    from hrlaif.core.models import load_causal_lm
    from hrlaif.core.seeding import seed_everything
    from hrlaif.core.store import write_json, write_jsonl
    from hrlaif.trainers.data_formats import load_prompts
    from hrlaif.trainers.precision import resolve

    place = resolve(cfg)
    prompts = load_prompts(cfg.prompts)
    if cfg.limit:
        prompts = stratified(prompts, cfg.limit)
    model, tok, identity = load_causal_lm(cfg.model, dtype="bfloat16" if place.bf16 else "float32")
    model.to(place.device).eval()
    seed_everything(cfg.seed)
    t0 = time.time()
    results = generate_k(model, tok, [p["prompt"] for p in prompts], cfg)
    rows = [{**p, "responses": r, "finished": f} for p, (r, f) in zip(prompts, results)]
    out = Path(cfg.out)
    write_jsonl(out, rows)
    n = sum(len(r["finished"]) for r in rows)
    write_json(out.with_name(out.stem + ".meta.json"), {
        "model": identity, "config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
        "placement": place.record(),
        "n_prompts": len(rows), "n_responses": n,
        "finished_share": sum(sum(r["finished"]) for r in rows) / max(1, n),
        "wall_time_s": round(time.time() - t0, 2)})
    return out
