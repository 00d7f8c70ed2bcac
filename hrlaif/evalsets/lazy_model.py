"""`LazyModel`: the model under evaluation, loaded on first use only.

A fully cached evaluation asks only for the model's identity (weights hash from the files)
and whether its tokenizer has a chat template, so it never loads torch weights. How the model
runs (device, precision, backend, processes) is its `engine` (hrlaif.evalsets.engine), set by the runner.
"""
from __future__ import annotations

from pathlib import Path

from hrlaif.evalsets import engine as engines


class LazyModel:
    """Loads the model on first use only, so a fully cached run never touches torch weights."""

    def __init__(self, spec: str | None = None, model=None, tokenizer=None, identity: dict | None = None):
        self.spec = spec
        self._model, self._tok = model, tokenizer
        self._identity = identity
        self.engine = engines.Engine()
        self._lms: dict[str, object] = {}  # lm-eval model per backend

    @property
    def in_memory(self) -> bool:
        """A model object handed in (the PPO actor): never moved, re-typed or reloaded."""
        return self._model is not None and self.spec is None

    @property
    def identity(self) -> dict:
        if self._identity is None:
            from hrlaif.core.models import dir_weights_hash, resolve
            ref = resolve(self.spec)
            wh = dir_weights_hash(Path(ref.path)) if ref.kind != "hub" else None
            if wh is None:
                self.load()
            else:
                self._identity = {**ref.identity, "kind": ref.kind, "spec": ref.spec, "path": ref.path,
                                  "weights_sha": wh}
        return self._identity

    def load(self):
        if self._model is None:
            from hrlaif.core.models import load_causal_lm
            self._model, tok, ident = load_causal_lm(self.spec, dtype=engines.load_dtype(self.engine))
            engines.place(self._model, self.engine)
            self._tok = self._tok or tok
            self._identity = {**(self._identity or {}), **ident}
        return self._model, self._tok

    @property
    def has_chat_template(self) -> bool:
        """Read from the checkpoint's files when possible: importing transformers for a
        cached run would cost more than the whole cached run."""
        if self._tok is None and self.identity.get("path"):
            p = Path(self.identity["path"])
            if (p / "chat_template.jinja").exists() or (p / "chat_template.json").exists():
                return True
            cfg_file = p / "tokenizer_config.json"
            if cfg_file.exists():
                import json
                return bool(json.loads(cfg_file.read_text(encoding="utf-8")).get("chat_template"))
        return bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def tokenizer(self):
        # Tokenizer only (cheap): cache keys need to know about the chat template.
        if self._tok is None:
            from transformers import AutoTokenizer

            from hrlaif.core.models import prepare_tokenizer
            self._tok = AutoTokenizer.from_pretrained(self.identity["path"])
            prepare_tokenizer(self._tok)
        return self._tok

    def lm_eval_model(self, batch_size: int, generation: bool = False, seed: int = 1234):
        """The lm-eval model object: vLLM for generation when the engine says so, else the HF model
        with the shared-prefix KV cache (which serves generation as lm-eval's HFLM does)."""
        backend = "vllm" if generation and self.engine.backend == "vllm" and not self.in_memory else "hf"
        if backend not in self._lms:
            path = None if self.in_memory else self.identity.get("path")
            if backend == "vllm":
                self._lms[backend] = engines.vllm_model(self.engine, batch_size, path, seed)
            elif self.engine.world_size > 1 and not self.in_memory:
                self._lms[backend] = engines.hf_model(self.engine, batch_size, tokenizer=self.tokenizer, path=path)
            else:
                model, tok = self.load()
                self._lms[backend] = engines.hf_model(self.engine, batch_size, model, tok)
        return self._lms[backend]
