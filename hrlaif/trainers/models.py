"""The models the trainers put scalar heads on, and what PPO reads from a model's outputs.

(The layout of OpenRLHF's `models/`: the models here, their losses in hrlaif/trainers/loss.py.)

- `RewardModel`: a causal-LM backbone without its LM head + Linear(hidden, 1) read at the LAST
  real token. `forward` returns the score clipped to [-clip, clip] (what PPO and evaluation
  read: no outlier reaches them) and, with `return_raw`, the raw score, which the training
  losses use so that an outlier keeps its gradient (rm_metrics.json's `clipped_share` reports
  how many scores the clip changes).
- `SequenceClassifierRM`: an HF `AutoModelForSequenceClassification` (one label, as TRL, OpenRLHF
  and RewardBench use) as a reward model: its logit is the score, unclipped (PPO's reward_clip
  applies).
- `ValueModel`: PPO's critic, a backbone + Linear(hidden, 1) at every position.
- `load_reward_model(spec)`: either kind and its tokenizer; `rm_inputs` encodes (prompt,
  response) texts the way that model reads them, for a reward model whose tokenizer is not the
  policy's (its ids cannot go through as they are) and for `hrlaif eval-rm`.
- `run_model`, `policy_logits`, `logprobs_from_logits`, `logprobs_and_entropy`: the forwards and
  per-token quantities experience making and the PPO update share.

Backbones load through `hrlaif.core.models` (`load_model(head="backbone")`, `load_weights`).
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from hrlaif.core.errors import UserError
from hrlaif.core.models import cannot_load, load_model, load_tokenizer, load_weights
from hrlaif.core.packed_attention import Packing, packable, packed_rows
from hrlaif.core.store import read_json, write_json
from hrlaif.core.tensors import last_token_index, position_ids
from hrlaif.core.tensors import position_ids as _positions

HEAD_FILE = "reward_head.safetensors"
RM_CONFIG_FILE = "reward_config.json"


class RewardModel(nn.Module):
    """Backbone (base transformer, no LM head) + Linear(hidden, 1), reward clipped to [-clip, clip]."""

    def __init__(self, backbone: nn.Module, clip: float = 10.0):
        super().__init__()
        if not clip > 0:
            raise UserError(f"clip must be > 0 (got {clip})")
        self.backbone = backbone
        hidden = backbone.config.hidden_size
        self.head = nn.Linear(hidden, 1)
        # Small init so initial rewards sit near 0, far from the clip (std as in InstructGPT-style RMs).
        nn.init.normal_(self.head.weight, std=1.0 / math.sqrt(hidden + 1))
        nn.init.zeros_(self.head.bias)
        self.clip = float(clip)
        # Counters for tests and the bench: how many backbone calls / sequences we ran.
        self.forward_calls = 0
        self.sequences_forwarded = 0

    @property
    def config(self):  # DeepSpeed and HF utilities look for module.config
        return self.backbone.config

    def forward(self, input_ids=None, attention_mask=None, return_raw: bool = False, inputs_embeds=None,
                packed: bool = False):
        """`inputs_embeds`: hidden states to start from instead of `input_ids` (hrlaif/trainers/trunk.py).
        `packed`: the rows run end to end without their padding when the backbone allows it (`run_model`)."""
        self.forward_calls += 1
        self.sequences_forwarded += int(attention_mask.size(0))
        pk = packing_for(self.backbone, attention_mask) if packed else None
        if pk is not None:
            with packed_rows(self.backbone, pk):
                hidden = self.backbone(input_ids=None if input_ids is None else pk.pack(input_ids),
                                       inputs_embeds=None if inputs_embeds is None else pk.pack(inputs_embeds),
                                       position_ids=pk.position_ids, use_cache=False).last_hidden_state[0]
            last = hidden[torch.tensor(pk.lengths, device=hidden.device).cumsum(0) - 1]
        else:
            # Position ids from the mask so a left-padded row scores like its unpadded self.
            hidden = self.backbone(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                   position_ids=position_ids(attention_mask), use_cache=False).last_hidden_state
            last = hidden[torch.arange(hidden.size(0), device=hidden.device), last_token_index(attention_mask)]
        raw = fp32_linear(self.head, last).squeeze(-1)
        reward = raw.clamp(-self.clip, self.clip)  # d reward / d raw = 0 outside: train on `raw`
        return (reward, raw) if return_raw else reward

    # -- persistence: backbone as an HF checkpoint, head + rm config beside it
    def save_pretrained(self, out_dir, **kwargs) -> None:
        from safetensors.torch import save_file

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(out_dir, safe_serialization=True)
        save_file({k: v.detach().float().cpu().contiguous() for k, v in self.head.state_dict().items()},
                  str(out_dir / HEAD_FILE))
        write_json(out_dir / RM_CONFIG_FILE, {"format": 1, "clip": self.clip,
                                              "hidden_size": self.backbone.config.hidden_size,
                                              "score_position": "last non-pad token",
                                              "backbone_class": type(self.backbone).__name__})

    @classmethod
    def from_pretrained(cls, path, clip: float | None = None, dtype=torch.float32) -> "RewardModel":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / RM_CONFIG_FILE).exists() or not (path / HEAD_FILE).exists():
            raise UserError(f"{path} is not a reward-model directory (no {RM_CONFIG_FILE} / {HEAD_FILE})")
        conf = read_json(path / RM_CONFIG_FILE)
        backbone = load_weights(path, "backbone", dtype)
        try:
            rm = cls(backbone, clip=conf["clip"] if clip is None else clip)
            rm.head.load_state_dict(load_file(str(path / HEAD_FILE)))
        except (OSError, KeyError, RuntimeError, SafetensorError) as e:  # no clip, a torn or mis-shaped head
            raise cannot_load(path, e)
        rm.head.to(dtype)
        rm.eval()
        return rm

    @classmethod
    def from_backbone(cls, spec: str | None, clip: float = 10.0):
        """New RM on top of a causal-LM checkpoint (`--model` syntax). -> (rm, tokenizer, identity)."""
        backbone, tok, identity = load_model(spec, head="backbone")
        return cls(backbone, clip=clip), tok, identity


class SequenceClassifierRM(nn.Module):
    """An HF sequence classifier with one label as a reward model: reward = its logit.

    The classifier reads the last token that is not its pad token (HF's rule), so batches are
    right-padded with `config.pad_token_id`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        if getattr(model.config, "num_labels", 1) != 1:
            raise UserError(f"a reward model has one output; this sequence classifier has "
                            f"{model.config.num_labels} labels")
        self.model = model
        if isinstance(getattr(model, "score", None), nn.Linear):  # Llama-style heads: an fp32 score
            model.score.forward = lambda x, m=model.score: fp32_linear(m, x)

    @property
    def config(self):
        return self.model.config

    @property
    def backbone(self):  # what ValueModel.from_reward_model copies (critic_init=reward)
        return self.model.base_model

    @property
    def head(self):
        return getattr(self.model, "score", None)

    def forward(self, input_ids=None, attention_mask=None, return_raw: bool = False, inputs_embeds=None):
        score = self.model(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                           use_cache=False).logits[:, 0].float()
        return (score, score) if return_raw else score


def fp32_linear(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """A scalar head in fp32, also under bf16 autocast (which would round a reward or a value to
    3 significant digits); its cost is one dot product per position."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        bias = None if linear.bias is None else linear.bias.float()
        return F.linear(x.float(), linear.weight.float(), bias)


def load_reward_model(spec) -> tuple[nn.Module, object | None]:
    """A harness reward-model directory, or an HF sequence-classification model (directory or hub
    id) -> (model in eval mode, its tokenizer or None if a harness directory has none)."""
    from hrlaif.core.models import HUB_ID_RE, resolve

    p = Path(spec)
    if (p / RM_CONFIG_FILE).exists() or (p.is_dir() and not (p / "config.json").exists()):
        rm = RewardModel.from_pretrained(p)  # names what is missing
        return rm, load_tokenizer(p) if (p / "tokenizer_config.json").exists() else None
    if not p.exists() and not HUB_ID_RE.match(str(spec)):
        raise UserError(f"reward model directory not found: {spec}")
    ref = resolve(str(spec))
    arch = _architectures(ref)
    if not any(a.endswith("ForSequenceClassification") for a in arch):
        # from_pretrained would put a random score head on it: random rewards, silently
        raise UserError(f"{spec} is neither a harness reward-model directory nor a sequence classifier "
                        f"(its architecture: {', '.join(arch) or 'unknown'})")
    tok = load_tokenizer(ref.path, ref.spec)
    model = load_weights(ref.path, "sequence_classification", name=ref.spec)
    if model.config.pad_token_id is None:  # it finds the last real token by the pad id
        model.config.pad_token_id = tok.pad_token_id
    return SequenceClassifierRM(model).eval(), tok


def _architectures(ref) -> list[str]:
    from transformers import AutoConfig

    try:
        return list(AutoConfig.from_pretrained(ref.path).architectures or [])
    except (OSError, ValueError) as e:
        raise cannot_load(ref.spec, e)


def same_vocabulary(tok_a, tok_b) -> bool:
    """True when token ids mean the same text in both tokenizers (they can pass through unchanged)."""
    return tok_a is None or tok_b is None or tok_a.get_vocab() == tok_b.get_vocab()


def rm_inputs(rm, tok, prompt: str, response: str, max_len: int = 2048) -> list[int]:
    """Token ids of a (prompt, response) pair as `rm` reads them, the last max_len kept.

    Harness reward model: its training layout (hrlaif.trainers.data_formats.encode_prompt_response).
    HF classifier: the conversation in its tokenizer's chat template when it has one, else the
    two texts as a tokenizer pair (the convention of classifier RMs such as DeBERTa ones)."""
    from hrlaif.trainers.data_formats import encode_prompt_response

    if isinstance(rm, RewardModel):
        return encode_prompt_response(tok, prompt, response, max_len)[0]
    if getattr(tok, "chat_template", None):
        text = tok.apply_chat_template([{"role": "user", "content": prompt},
                                        {"role": "assistant", "content": response}], tokenize=False)
        ids = tok(text, add_special_tokens=False)["input_ids"]
    else:
        ids = tok(prompt, response)["input_ids"]
    return ids[-max_len:]


class ValueModel(nn.Module):
    """Critic: transformer backbone (no LM head) + a linear value head per position."""

    def __init__(self, backbone: nn.Module, head: nn.Linear | None = None):
        super().__init__()
        self.backbone = backbone
        hidden = backbone.config.hidden_size
        self.v_head = head if head is not None else nn.Linear(hidden, 1)
        if head is None:
            nn.init.zeros_(self.v_head.weight)  # start at V=0: no random bias in the first advantages
            nn.init.zeros_(self.v_head.bias)

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, position_ids=None):
        """`position_ids`: given with a packed row (no mask); else counted from the mask."""
        pos = position_ids if position_ids is not None else _positions(attention_mask)
        h = self.backbone(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                          position_ids=pos, use_cache=False).last_hidden_state
        return fp32_linear(self.v_head, h).squeeze(-1)

    @classmethod
    def from_checkpoint(cls, path: str, name: str | None = None) -> "ValueModel":
        """A fresh (zero) value head on a causal-LM checkpoint's backbone."""
        return cls(load_weights(path, "backbone", name=name))

    @classmethod
    def from_reward_model(cls, rm: nn.Module) -> "ValueModel":
        """A copy of a reward model's backbone and head: the critic starts from the RM's judgement."""
        backbone = next((getattr(rm, n) for n in ("backbone", "model", "transformer") if hasattr(rm, n)), None)
        head = next((getattr(rm, n) for n in ("head", "score", "v_head", "value_head")
                     if isinstance(getattr(rm, n, None), nn.Linear)), None)
        if backbone is not None and hasattr(backbone, "get_decoder") and not hasattr(backbone, "layers"):
            backbone = backbone.get_decoder()  # a *ForCausalLM wrapper: keep the decoder only
        if backbone is None:
            raise UserError("critic_init=reward: the reward model exposes no backbone")
        return cls(copy.deepcopy(backbone), copy.deepcopy(head) if head is not None else None)


# ----------------------------------------------------------------- forwards and outputs

EAGER_MAX_TOKENS = 512


def prefer_eager_attention(model: nn.Module, max_tokens: int, device: str) -> None:
    """Plain (eager) attention instead of SDPA for CPU runs whose sequences stay short.

    On a CPU, SDPA's flash kernel is slower than the plain matmul-softmax-matmul path at these
    lengths (SmolLM2, batch 8 x 147 tokens, bf16, one core: backward 4.6 -> 3.9 s per model),
    and the plain path's (B, heads, T, T) probabilities stay small up to EAGER_MAX_TOKENS."""
    if device != "cpu" or max_tokens > EAGER_MAX_TOKENS:
        return
    for m in model.modules():
        config = getattr(m, "config", None)
        if getattr(config, "_attn_implementation", None) == "sdpa" and hasattr(m, "set_attn_implementation"):
            m.set_attn_implementation("eager")

def _forward(model, input_ids, attention_mask, trunk=None, hidden=None, **kw):
    if hidden is not None and trunk is not None and trunk.shares(model):
        with trunk.top(model):
            return model(inputs_embeds=hidden, attention_mask=attention_mask, **kw)
    return model(input_ids=input_ids, attention_mask=attention_mask, **kw)


def packing_for(model, attention_mask: torch.Tensor) -> Packing | None:
    """A `Packing` of the batch when it has padding and the model (or a DeepSpeed engine's model) can run
    padding-free (hrlaif/core/packed_attention.py); None otherwise."""
    if bool(attention_mask.bool().all()) or not packable(getattr(model, "module", model)):
        return None
    return Packing(attention_mask)


def run_model(model, input_ids, attention_mask, trunk=None, hidden=None, packed: bool = False, **kw):
    """`model(input_ids, attention_mask, **kw)`, or only its top blocks on the shared trunk's
    hidden states when it shares the trunk (hrlaif/trainers/trunk.py; same result, fewer FLOPs).
    `packed`: the rows run end to end without their padding (`packing_for`) when the model allows it;
    the output (a per-token tensor: the critic's values) comes back in the padded layout, 0 at padding."""
    pk = packing_for(model, attention_mask) if packed else None
    if pk is None:
        return _forward(model, input_ids, attention_mask, trunk, hidden, **kw)
    with packed_rows(getattr(model, "module", model), pk):
        out = _forward(model, None if input_ids is None else pk.pack(input_ids), None, trunk,
                       None if hidden is None else pk.pack(hidden), position_ids=pk.position_ids, **kw)
    return pk.unpack(out)


def policy_logits(model, sequences, attention_mask, prompt_width: int, temperature: float,
                  trunk=None, hidden=None, packed: bool = False):
    """Logits that predict each response token, shape (B, R, V), temperature applied.

    Only the last R+1 positions go through the LM head: on a 49k vocabulary the head is a
    fifth of a small model's FLOPs, and prompt positions never need it. `packed`: padding-free
    (`run_model`); the head then sees only real positions and padding positions get logits 0.
    """
    B, W = sequences.shape
    resp_len = W - prompt_width
    pk = packing_for(model, attention_mask) if packed else None
    if pk is None:
        out = _forward(model, sequences, attention_mask, trunk, hidden,
                       position_ids=position_ids(attention_mask), use_cache=False, logits_to_keep=resp_len + 1)
        logits = out.logits[:, :-1]
    else:
        # positions P-1 .. W-2 of every row (each predicts the next token), flat in [B*W]
        cols = torch.arange(prompt_width - 1, W - 1, device=sequences.device)
        flat = (torch.arange(B, device=sequences.device)[:, None] * W + cols[None]).flatten()
        real, slots = pk.slots(flat)
        with packed_rows(getattr(model, "module", model), pk):
            out = _forward(model, pk.pack(sequences), None, trunk, None if hidden is None else pk.pack(hidden),
                           position_ids=pk.position_ids, use_cache=False, logits_to_keep=slots)
        kept = out.logits[0]
        logits = kept.new_zeros(B * resp_len, kept.shape[-1]).index_copy(0, real.nonzero().squeeze(1), kept)
        logits = logits.view(B, resp_len, -1)
    return logits / temperature if temperature != 1.0 else logits


def contiguous_args(_module, args):
    """Forward pre-hook: tensor arguments made contiguous (`logits_to_keep` hands the LM head a strided
    slice, which its matmul reads 1.4x slower)."""
    return tuple(a.contiguous() if isinstance(a, torch.Tensor) else a for a in args)


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of `tokens` (B, R) under `logits` (B, R, V), in the logits' dtype."""
    return logprobs_and_entropy(logits, tokens, entropy=False)[0]


def logprobs_and_entropy(logits: torch.Tensor, tokens: torch.Tensor, entropy: bool = True):
    """(log-probs of `tokens`, the entropy of each position's distribution or None), from ONE
    log-softmax over the vocabulary: the fused kernel is one pass where gather - logsumexp took
    several, and the entropy reuses it (SmolLM2's 49k vocabulary x 8 x 64 positions, forward and
    backward on one core: 571 -> 339 ms). The entropy is a statistic: computed without grad."""
    logp_all = torch.log_softmax(logits, dim=-1)
    picked = logp_all.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    if not entropy:
        return picked, None
    with torch.no_grad():
        return picked, -(logp_all.exp() * logp_all).sum(-1)
