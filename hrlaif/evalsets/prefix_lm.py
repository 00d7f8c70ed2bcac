"""lm-eval's HF model with shared-prefix KV caching for log-likelihood requests.

A 5-shot MMLU prompt is ~600 tokens, ~500 of them the subject's few-shot block that every
item of the subject repeats. lm-eval's `HFLM` encodes the whole prompt for each item and
takes a log-softmax over every position and the whole vocabulary. Here, requests whose
token ids share a long prefix are grouped; the prefix runs once, and its KV cache serves
every item (and every answer choice) of the group, so each item costs only its own suffix.
Only the positions that score continuation tokens go through the LM head.

Generation does the same for a batch whose prompts share a few-shot block (GSM8K's 5 shots are
~700 of each prompt's ~750 tokens): the block runs once, with batch 1, and every row's KV cache
starts from it (`_shared_prefix_generation`).

Everything else is lm-eval's: task configs, prompts, few-shot sampling, request building,
metrics. The numbers are the same as `HFLM`'s up to float rounding (tests/test_prefix_lm.py).
"""
from __future__ import annotations

import contextlib
import inspect
import logging

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM
from tqdm import tqdm

log = logging.getLogger(__name__)

MIN_SHARED = 32  # tokens; a shorter common prefix is not worth a separate pass


def common_prefix(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def prefix_groups(rows: list[tuple[int, ...]], limits: list[int], min_shared: int = MIN_SHARED
                  ) -> list[tuple[int, list[int]]]:
    """Group row indices whose token ids share a prefix of >= min_shared tokens.

    `limits[i]` caps how much of row i may be prefix (its scored positions must stay in the
    suffix). Returns [(prefix_len, [row indices])]; prefix_len 0 = run those rows in full."""
    order = sorted(range(len(rows)), key=lambda i: rows[i])
    groups: list[tuple[int, list[int]]] = []
    cur: list[int] = []
    shared = 0
    for i in order:
        if cur:
            s = min(shared, common_prefix(rows[cur[0]], rows[i]), limits[i])
            if s >= min_shared:
                cur.append(i)
                shared = s
                continue
            groups.append((shared if len(cur) > 1 else 0, cur))
        cur, shared = [i], limits[i]
    if cur:
        groups.append((shared if len(cur) > 1 else 0, cur))
    return [(p if p >= min_shared else 0, idx) for p, idx in groups]


class PrefixCachingHFLM(HFLM):
    """`HFLM` whose log-likelihood requests reuse the KV cache of shared prompt prefixes.

    lm-eval's own `mixed_precision_dtype=torch.bfloat16` runs the forward passes (here and in
    generation) under bf16 autocast over fp32 weights: matmuls in bf16, norms, residual stream and
    log-probs in fp32; None keeps the weights' own precision."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if getattr(self, "accelerator", None) is not None:
            # lm-eval takes the node-local index as the rank; across nodes it must be the global one,
            # or two nodes would score the same shard and none the other.
            self._rank = self.accelerator.process_index
        # Tokens run through the model: shared prefixes once, suffixes per row (bench/tests read it).
        self.token_counts = {"prefix": 0, "suffix": 0, "requested": 0}

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        if self.backend != "causal":
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        # One row per distinct model input: choices whose continuation is one token differ only
        # in the token they score, so they share a row (lm-eval's one-token-continuation trick).
        rows: dict[tuple[int, ...], list[int]] = {}
        spans: list[tuple[tuple[int, ...], int]] = []
        for n, (_, ctx, cont) in enumerate(requests):
            tokens = tuple((ctx + cont)[-(self.max_length + 1):][:-1])
            rows.setdefault(tokens, []).append(n)
            spans.append((tokens, len(cont)))
        keys = list(rows)
        self.token_counts["requested"] += sum(len(k) for k in keys)
        # A row's scored positions are its last len(cont) inputs; the prefix must end before them.
        n_scored = {k: max(spans[j][1] for j in rows[k]) for k in keys}
        limits = [len(k) - n_scored[k] for k in keys]
        bs = int(override_bs or (self.batch_size if self.batch_size != "auto" else 8) or 8)
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0, desc="loglikelihood (prefix cache)")
        for prefix_len, idx in prefix_groups(keys, limits):
            past = self._prefix_cache(keys[idx[0]][:prefix_len]) if prefix_len else None
            idx.sort(key=lambda i: -len(keys[i]))  # similar lengths per batch: less padding
            for b in range(0, len(idx), bs):
                batch = [keys[i] for i in idx[b:b + bs]]
                logp = self._suffix_logprobs(batch, prefix_len, past, n_scored)
                for k in batch:
                    for j in rows[k]:
                        cont = requests[j][2]
                        lp = logp[k][-len(cont):]
                        picked = lp.gather(-1, torch.tensor(cont, device=lp.device)[:, None]).squeeze(-1)
                        ans = (float(picked.sum()), bool((lp.argmax(-1).tolist() == list(cont))))
                        results[j] = ans
                        if requests[j][0] is not None:
                            self.cache_hook.add_partial("loglikelihood", requests[j][0], ans)
                        bar.update(1)
        bar.close()
        return results

    def _model_generate(self, context, max_length: int, stop: list[str], **generation_kwargs):
        """lm-eval's generation (HF `generate`, its stop sequences and settings), decoding as PPO does
        (hrlaif.core.decode_step.decoding: linears packed once per call for the batch's few rows, decode
        steps without transformers' per-call machinery) into a KV cache that grows in place, with no copy
        of the whole cache per token (bench/decode_speed.py measures it)."""
        from hrlaif.core.decode_step import decoding
        from hrlaif.core.decoding import growing_cache

        new_tokens = max(max_length - context.shape[1], 1)
        # decoding() packs for autocast's dtype, so it opens inside it.
        with self._autocast(), decoding(self.model, context.shape[0]), contextlib.ExitStack() as stack:
            shared = self._shared_prefix_generation(context, generation_kwargs.get("attention_mask"), new_tokens,
                                                    stack)
            if shared is None:
                generation_kwargs.update(growing_cache(self.model, new_tokens))
            else:
                context, generation_kwargs["attention_mask"], cache_kwarg = shared
                generation_kwargs.update(cache_kwarg)
            return super()._model_generate(context, max_length, stop, **generation_kwargs)

    @torch.no_grad()
    def _shared_prefix_generation(self, context, mask, new_tokens: int, stack: contextlib.ExitStack):
        """For left-padded prompts sharing >= MIN_SHARED leading tokens: (ids, mask, cache kwarg) with the
        shared tokens moved to the front of every row, the padding between them and each row's own
        suffix, and a KV cache already holding the shared tokens (computed once, batch 1). The width
        is unchanged (the longest row still has no padding), so lm-eval's stop criteria and its
        slicing of the output work as before; positions follow the mask, as for left padding.
        The cache keeps the shared tokens once for all rows (hrlaif/core/prefix_attention.py), opened
        on `stack` for the generate call, or where that does not apply, a copy in every row.
        None when there is nothing worth sharing."""
        from hrlaif.core.decoding import growing_cache
        from hrlaif.core.prefix_attention import shared_prefix_cache

        if mask is None or context.shape[0] < 2:
            return None
        rows = [tuple(r[m.bool()].tolist()) for r, m in zip(context, mask)]
        shared = min(len(r) for r in rows) - 1  # every row keeps a token of its own: its logits start decoding
        for r in rows[1:]:
            shared = min(shared, common_prefix(rows[0], r))
        if shared < MIN_SHARED:
            return None
        width = context.shape[1]
        ids = torch.full_like(context, self.tokenizer.pad_token_id or 0)
        new_mask = torch.zeros_like(mask)
        ids[:, :shared] = context.new_tensor(rows[0][:shared])
        new_mask[:, :shared] = 1
        for i, r in enumerate(rows):
            own = r[shared:]
            ids[i, width - len(own):] = context.new_tensor(own)
            new_mask[i, width - len(own):] = 1
        prefix_kv = self._prefix_cache(rows[0][:shared])
        kwarg = stack.enter_context(shared_prefix_cache(self.model, prefix_kv, width - shared + new_tokens))
        if kwarg is None:
            kwarg = growing_cache(self.model, width - shared + new_tokens)
            cache, B = next(iter(kwarg.values())), context.shape[0]
            for n, (k, v) in enumerate(prefix_kv):  # copied into B rows with room to grow
                cache.update(k.expand(B, -1, -1, -1), v.expand(B, -1, -1, -1), n)
        return ids, new_mask, kwarg

    # ------------------------------------------------------------------ model passes
    @staticmethod
    def _forward(module, **kw):
        if "cache" in kw and "cache" not in _forward_params(module):
            kw["past_key_values"] = kw.pop("cache")  # transformers < 5.20 names it so
        return module(**kw)

    @torch.no_grad()
    def _prefix_cache(self, prefix: tuple[int, ...]):
        ids = torch.tensor([prefix], dtype=torch.long, device=self.device)
        self.token_counts["prefix"] += len(prefix)
        with self._autocast():  # the decoder only: no prefix position is scored, so no LM head
            out = self._forward(self.model.get_decoder(), input_ids=ids, use_cache=True)
        cache = out.past_key_values
        return [(layer.keys, layer.values) for layer in cache.layers]

    def _autocast(self):
        device = torch.device(self.device).type
        dtype = self.mixed_precision_dtype
        return torch.autocast(device_type=device, dtype=dtype or torch.float32, enabled=dtype is not None)

    @torch.no_grad()
    def _suffix_logprobs(self, batch: list[tuple[int, ...]], prefix_len: int, past, n_scored: dict
                         ) -> dict[tuple[int, ...], torch.Tensor]:
        """{row: log-probs (n_scored[row], vocab)} at each row's last n_scored positions."""
        from transformers import DynamicCache

        B = len(batch)
        width = max(len(k) - prefix_len for k in batch)
        ids = torch.full((B, width), self.tokenizer.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros((B, prefix_len + width), dtype=torch.long)
        mask[:, :prefix_len] = 1
        for r, k in enumerate(batch):
            suffix = k[prefix_len:]
            ids[r, :len(suffix)] = torch.tensor(suffix)
            mask[r, prefix_len:prefix_len + len(suffix)] = 1  # right padding: later pads cannot leak back
        ids, mask = ids.to(self.device), mask.to(self.device)
        self.token_counts["suffix"] += sum(len(k) - prefix_len for k in batch)
        kw = {"input_ids": ids, "attention_mask": mask, "use_cache": past is not None,
              "position_ids": (torch.arange(width, device=self.device) + prefix_len)[None].expand(B, -1)}
        if past is not None:
            kw["cache"] = DynamicCache(ddp_cache_data=[(k.expand(B, -1, -1, -1), v.expand(B, -1, -1, -1))
                                                       for k, v in past], config=self.model.config)
        with self._autocast():
            hidden = self._forward(self.model.get_decoder(), **kw).last_hidden_state
        head = self.model.get_output_embeddings()
        out = {}
        for r, k in enumerate(batch):
            end = len(k) - prefix_len
            h = hidden[r, end - n_scored[k]:end]
            logits = head(h.to(head.weight.dtype)).float()
            out[k] = F.log_softmax(logits, dim=-1)
        return out


def _forward_params(model) -> set[str]:
    return set(inspect.signature(model.forward).parameters)
