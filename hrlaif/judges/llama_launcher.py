"""Launch `llama_cpp.server` with weight repacking into extra buffer types turned off.

pip compiles llama.cpp for the host it installs on, and its CPU backend then "repacks"
quantised weights into extra buffer types (CPU_REPACK, and AMX tiles on Xeons with
`amx_int8`/`amx_bf16`). On some AMX hosts the first request kills the server with a general
protection fault at `ldtilecfg`. Loading with `llama_model_params.use_extra_bufts = False`
keeps the weights in plain CPU buffers on every host, so no CPU-specific kernel path is
taken; for a 135M judge the speed difference is within noise.

`llama_cpp.server` exposes no flag for it, and `Llama()` builds its model params from
`llama_model_default_params()` at load time, so we wrap that function before the server
loads the model.

The judge reads log-probabilities of the answer's first token, and llama-cpp-python serves
logprobs only with `logits_all`, which makes every prompt token pay for the LM head, a copy of
its 49k logits and a log-softmax over all of them (`keep_only_needed_logits` drops that work).
Usage (what `hrlaif.judges.server.embedded_judge` runs):

    python -m hrlaif.judges.llama_launcher --model X.gguf --port N ...   # llama_cpp.server's flags
    python -m hrlaif.judges.llama_launcher --dequantize SRC.gguf DST.gguf bf16   # a float copy
"""
from __future__ import annotations

import inspect
import sys

import numpy as np


def disable_extra_buffer_types() -> None:
    import llama_cpp.llama_cpp as lib

    default_params = lib.llama_model_default_params

    def params():
        p = default_params()
        p.use_extra_bufts = False  # no CPU_REPACK / AMX buffers: the same code path on every CPU
        return p

    lib.llama_model_default_params = params


def keep_only_needed_logits() -> None:
    """With `logits_all`, compute logits only where a completion can read them.

    A completion's logprobs come from the logits after the last prompt token and after each
    generated token; llama-cpp-python computes them for every prompt token too (the LM head is
    ~21% of SmolLM2-135M's weights), copies each row out, and log-softmaxes the whole table.
    Here each evaluated chunk asks llama.cpp for its last token's logits only, and the
    log-softmax runs row by row over the rows a caller indexes. The rows a completion reads are
    the same numbers (tests/test_judge_server.py compares the served logprobs with and without).
    A completion that echoes its prompt with logprobs would read the prompt's rows, so it is
    refused (the harness never asks for one). Only applied to the llama-cpp-python versions whose
    `eval` this was written against.
    """
    from llama_cpp import llama as L

    if "logits_all=self._logits_all" not in inspect.getsource(L.Llama.eval):
        print("hrlaif: unknown llama-cpp-python Llama.eval; prompt logits left as they are", file=sys.stderr)
        return
    plain_eval, plain_logprobs, plain_create = L.Llama.eval, L.Llama.logits_to_logprobs, L.Llama._create_completion

    def eval(self, tokens):
        if not self._logits_all:
            return plain_eval(self, tokens)
        self._ctx.kv_cache_seq_rm(-1, self.n_tokens, -1)
        for i in range(0, len(tokens), self.n_batch):
            batch = tokens[i:i + self.n_batch]
            n_past, n = self.n_tokens, len(batch)
            self._batch.set_batch(batch=batch, n_past=n_past, logits_all=False)  # the last token's only
            self._ctx.decode(self._batch)
            self.input_ids[n_past:n_past + n] = batch
            self.scores[n_past + n - 1, :] = np.ctypeslib.as_array(self._ctx.get_logits(), shape=(self._n_vocab,))
            self.n_tokens += n
            self._requires_eval = False

    class RowLogprobs:
        """`logits_to_logprobs` of a table, computed for the rows read (a completion's, not the prompt's)."""

        def __init__(self, table):
            self.table = table

        def __getitem__(self, idx):
            return RowLogprobs(self.table[idx]) if isinstance(idx, slice) else plain_logprobs(self.table[idx])

        def __iter__(self):
            return (plain_logprobs(row) for row in self.table)

        def __len__(self):
            return len(self.table)

    def logits_to_logprobs(logits, axis: int = -1):
        if isinstance(logits, np.ndarray) and logits.ndim == 2 and axis in (-1, 1):
            return RowLogprobs(logits)
        return plain_logprobs(logits, axis)

    def create_completion(self, *args, **kwargs):
        if kwargs.get("echo") and kwargs.get("logprobs") is not None:
            raise ValueError("the embedded judge does not serve logprobs of an echoed prompt")
        return plain_create(self, *args, **kwargs)

    L.Llama.eval = eval
    L.Llama._create_completion = create_completion
    L.Llama.logits_to_logprobs = staticmethod(logits_to_logprobs)
    # Top logprobs are picked by sorting (logprob, token id) tuples of the whole vocabulary in
    # Python, per generated token: ~40 ms of numpy scalars per token, a third of a judge request's
    # time at 135M. The module's `sorted` becomes one with the same result, done by numpy.
    L.sorted = sorted_pairs


def sorted_pairs(iterable, *, key=None, reverse: bool = False) -> list:
    """`sorted`, with the same result; a long list of (number, int) pairs is ordered by numpy."""
    items = list(iterable)
    if key is not None or len(items) < 1024 or not all(type(x) is tuple and len(x) == 2 for x in items[:2]):
        return sorted(items, key=key, reverse=reverse)
    try:
        values = np.array([a for a, _ in items], dtype=np.float64)
        ids = np.array([b for _, b in items], dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        return sorted(items, reverse=reverse)
    if np.isnan(values).any():  # Python's order of NaNs is not numpy's
        return sorted(items, reverse=reverse)
    order = np.lexsort((ids, values))  # by value, then id: tuple order (the pairs are distinct by id)
    return [items[i] for i in (order[::-1] if reverse else order)]


def dequantize(src: str, dst: str, fmt: str) -> None:
    """Write `src` with its weights in `fmt` (f16 | bf16 | q8_0): llama.cpp's own quantize tool, which
    dequantises a quantised model when asked for a float type, and requantises it for q8_0 (8 bits per
    weight and a scale per block of 32: within 1/254 of each block's largest weight of the Q4_1 values)."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = {"f16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16, "bf16": llama_cpp.LLAMA_FTYPE_MOSTLY_BF16,
                    "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0}[fmt]
    params.allow_requantize = True
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), params)
    if rc != 0:
        sys.exit(f"llama_model_quantize returned {rc}")


def main() -> None:
    if sys.argv[1:2] == ["--dequantize"]:
        dequantize(*sys.argv[2:5])
        return
    disable_extra_buffer_types()
    keep_only_needed_logits()
    print("hrlaif: llama.cpp extra buffer types disabled (use_extra_bufts=False); prompt logits skipped",
          file=sys.stderr, flush=True)
    from llama_cpp.server.__main__ import main as serve

    serve()


if __name__ == "__main__":
    main()
