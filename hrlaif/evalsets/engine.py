"""How the model under evaluation runs: device, precision, backend and process layout, decided
once per evaluation (hrlaif.core.hardware does the per-host choice) and recorded in results.json.

- precision bf16 = bf16 matmuls under autocast. On a CPU the weights stay fp32 except the
  decoder's matmul weights, stored in bf16 (what autocast would round them to on every call):
  norms, embeddings, the residual stream and log-probs stay fp32, so a 135M model picks the same
  MMLU letters as in fp32, where plain bf16 weights flip about one in ten. On CUDA the weights
  load in bf16 (half the memory of a 7B model), as lm-eval and vLLM users expect.
- several processes (`accelerate launch` / torchrun set WORLD_SIZE): lm-eval's data parallelism.
  Each process takes its own GPU and its share of requests; rank 0 gathers, scores and writes.
- backend vllm: generation benchmarks through lm-eval's vLLM model; log-likelihood benchmarks
  keep the HF model (shared-prefix KV cache).
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from dataclasses import dataclass

from hrlaif.core import hardware
from hrlaif.core.errors import UserError

log = logging.getLogger(__name__)
BACKENDS = ("hf", "vllm")
VLLM_MISSING = "eval.backend vllm: the vllm package is not installed (pip install 'hrlaif-harness[vllm]')"


@dataclass(frozen=True)
class Engine:
    device: str = "cpu"
    precision: str = "fp32"
    backend: str = "hf"
    rank: int = 0
    world_size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def cache_fields(self, generates: bool) -> dict:
        """What of the engine changes a benchmark's outputs (device type, not the GPU's index)."""
        out = {"precision": self.precision, "device": self.device.split(":")[0]}
        if generates and self.backend != "hf":
            out["backend"] = self.backend
        return out

    def describe(self) -> dict:
        """results.json `model.precision`, `model.device`, ... (the host facts are `results["host"]`)."""
        return {"precision": self.precision, "device": self.device, "backend": self.backend,
                "processes": self.world_size, "weights": weights_layout(self)}


def world() -> tuple[int, int]:
    """(rank, world size) of this process as `accelerate launch` / torchrun set them."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def resolve(device: str = "auto", precision: str = "auto", backend: str = "hf") -> Engine:
    """The engine for these settings on this host (a UserError for what this host cannot do)."""
    if backend not in BACKENDS:
        raise UserError(f"eval.backend: must be one of {', '.join(BACKENDS)} (got {backend!r})")
    if backend == "vllm" and not vllm_available():
        raise UserError(VLLM_MISSING)
    rank, size = world()
    dev = hardware.resolve_device(device)
    if size > 1 and dev == "cuda":  # one GPU per process
        dev = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return Engine(dev, hardware.resolve_precision(precision, dev), backend, rank, size)


def weights_layout(engine: Engine) -> str:
    if engine.precision == "fp32":
        return "fp32"
    return "bf16" if engine.device.startswith("cuda") else "fp32, decoder matmul weights bf16"


def load_dtype(engine: Engine) -> str:
    return "bfloat16" if weights_layout(engine) == "bf16" else "float32"


def autocast_dtype(engine: Engine):
    import torch
    return torch.bfloat16 if engine.precision == "bf16" else None


def bf16_matmul_weights(model) -> None:
    """Store the decoder blocks' Linear weights in bf16, in place (forward runs under bf16 autocast,
    which would round them to exactly these values on every call)."""
    import torch

    for mod in decoder_linears(model):
        mod.to(torch.bfloat16)


def decoder_linears(model):
    """The Linear layers of the model's decoder blocks (not the LM head)."""
    import torch

    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    return [mod for mod in decoder.modules() if isinstance(mod, torch.nn.Linear)]


@contextlib.contextmanager
def lent_bf16_matmul_weights(model, engine: Engine):
    """For a model handed in (PPO's actor, fp32 master weights): its decoder's Linear weights lent
    as bf16 copies for the duration of a `with` block, the originals put back after.

    Under bf16 autocast torch rounds an fp32 weight to bf16 on every call (it caches casts only
    while autograd records), which made PPO's drift evaluation of MMLU cloze 2x slower than
    `hrlaif eval` on the same items; the copies are those same rounded values, so scores are
    unchanged. Nothing is lent in fp32, on CUDA (weights there follow the trainer's precision), or
    for parameters DeepSpeed ZeRO-3 partitions (`ds_id`)."""
    import torch

    lent = []
    if weights_layout(engine) == "fp32, decoder matmul weights bf16":
        for mod in decoder_linears(model):
            w = mod.weight
            if w is not None and w.dtype == torch.float32 and not hasattr(w, "ds_id"):
                lent.append((mod, w))
                mod._parameters["weight"] = torch.nn.Parameter(w.detach().to(torch.bfloat16), requires_grad=False)
    try:
        yield
    finally:
        for mod, w in lent:  # the very Parameter objects the optimiser holds
            mod._parameters["weight"] = w


def place(model, engine: Engine):
    """A model we loaded for this engine: on its device, with its weight layout."""
    model.to(engine.device)
    if weights_layout(engine) == "fp32, decoder matmul weights bf16":
        bf16_matmul_weights(model)
    return model


def hf_model(engine: Engine, batch_size: int, model=None, tokenizer=None, path: str | None = None):
    """lm-eval's HF model with the shared-prefix KV cache (hrlaif.evalsets.prefix_lm), on an in-memory
    model, or built by lm-eval from `path` when several processes share the work (lm-eval only
    shards requests for a model it placed itself)."""
    from hrlaif.evalsets.prefix_lm import PrefixCachingHFLM

    kw = {"batch_size": batch_size, "mixed_precision_dtype": autocast_dtype(engine)}
    if model is not None and engine.world_size == 1:
        return PrefixCachingHFLM(pretrained=model, tokenizer=tokenizer, device=str(model.device), **kw)
    if path is None:
        raise UserError("evaluation in several processes needs the model on disk (not an in-memory model)")
    lm = PrefixCachingHFLM(pretrained=path, tokenizer=tokenizer, device=engine.device, dtype=load_dtype(engine), **kw)
    if weights_layout(engine) == "fp32, decoder matmul weights bf16":
        bf16_matmul_weights(lm.model)
    return lm


def vllm_model(engine: Engine, batch_size: int, path: str | None, seed: int):
    """lm-eval's vLLM model for generation benchmarks (a model on disk, GPUs)."""
    if not vllm_available():
        raise UserError(VLLM_MISSING)
    if path is None:
        raise UserError("eval.backend vllm needs the model on disk (an in-memory model runs on hf)")
    from lm_eval.models.vllm_causallms import VLLM

    return VLLM(pretrained=path, dtype="bfloat16" if engine.precision == "bf16" else "float32",
                batch_size=batch_size, seed=seed)
