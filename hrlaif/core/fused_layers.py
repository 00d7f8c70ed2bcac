"""A Llama decoder layer's decode step in two C calls around its attention (fewrows_kernel.c).

With the few-rows product chosen (hrlaif/core/decoding.py) a decode step's weights already stream at
memory speed; what is left of a SmolLM2 step at batch 8 is ~45 small ops and ~25 Python calls per
layer (norms, rotary, SiLU, residual adds, module dispatch): ~17 of a ~66-ms step (AMX host held to
AVX2). `FusedLayers` runs each layer as `layer_qkv` (RMSNorm, the q/k/v products, rotary), the
cache's own `update` and the model's attention function as before, then `layer_out` (o product and
residual, RMSNorm, gate/up products, SiLU x up, down product and residual), on the packed weights the
linears already hold. fp32 only, and not bit for bit transformers' ops (sums in another order, exp
within 2 ulp): tests/test_fused_layers.py bounds the difference by fp32's own error against float64.

It applies only where every module it replaces is transformers' plain kind with no hooks of its own:
`FusedLayers.build` returns None otherwise, and `decode_step` runs the modules as before.
"""
from __future__ import annotations

import torch
from transformers.models.llama import modeling_llama as llama

from hrlaif.core import fewrows

_LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
            "mlp.up_proj", "mlp.down_proj")


def hooked(module) -> bool:
    """Whether any forward or backward hook sits on `module` itself."""
    return bool(module._forward_pre_hooks or module._forward_hooks or module._backward_hooks
                or module._backward_pre_hooks)


class FusedLayers:
    """Per layer, the packed weights and norm weights `layer_qkv` / `layer_out` take."""

    def __init__(self, model, layers: list[tuple]):
        cfg = model.config
        self.layers = layers
        self.D, self.I = cfg.hidden_size, cfg.intermediate_size
        self.d = model.model.layers[0].self_attn.head_dim
        self.H, self.kvh = cfg.num_attention_heads, cfg.num_key_value_heads

    @classmethod
    def build(cls, model) -> FusedLayers | None:
        """The model's layers ready for the fused calls, or None: the kernel is not built, a linear is not on
        the few-rows product (or has a bias), a norm or linear is hooked, the activation is not SiLU,
        or the weights are not fp32 on the CPU."""
        cfg = model.config
        d = model.model.layers[0].self_attn.head_dim if len(model.model.layers) else 0
        if not fewrows.available() or getattr(cfg, "hidden_act", None) != "silu" \
                or getattr(cfg, "pretraining_tp", 1) != 1 or cfg.num_attention_heads * d != cfg.hidden_size \
                or d % 2 or cfg.hidden_size % fewrows.BLOCK or cfg.intermediate_size % fewrows.BLOCK \
                or (cfg.num_key_value_heads * d) % fewrows.BLOCK:
            return None
        layers = []
        for layer in model.model.layers[: cfg.num_hidden_layers]:
            lins = [layer.get_submodule(n) for n in _LINEARS]
            norms = (layer.input_layernorm, layer.post_attention_layernorm)
            if any(m.bias is not None or "_fewrows_weight" not in vars(m) or hooked(m) for m in lins) \
                    or any(type(n) is not llama.LlamaRMSNorm or hooked(n) or n.weight.dtype != torch.float32
                           or n.weight.device.type != "cpu" for n in norms) \
                    or hooked(layer.self_attn) or hooked(layer.mlp) \
                    or (isinstance(layer.mlp.act_fn, torch.nn.Module) and hooked(layer.mlp.act_fn)):
                return None
            layers.append((*(m._fewrows_weight for m in lins), norms[0].weight.detach(), norms[0].variance_epsilon,
                           norms[1].weight.detach(), norms[1].variance_epsilon))
        return cls(model, layers)

    def fits(self, h: torch.Tensor) -> bool:
        return h.dtype == torch.float32 and h.device.type == "cpu" and not torch.is_autocast_enabled("cpu")

    def start(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
        """Buffers for one step: h [B, 1, D] and cos/sin [B, 1, d] copied into rows padded to 8 (zeros)."""
        B = h.shape[0]
        self.B, self.R = B, -(-B // fewrows.BLOCK) * fewrows.BLOCK
        self.h = h.new_zeros(self.R, self.D)
        self.h[:B] = h.reshape(B, self.D)
        self.cos, self.sin = h.new_zeros(self.R, self.d), h.new_zeros(self.R, self.d)
        self.cos[:B], self.sin[:B] = cos.reshape(B, self.d), sin.reshape(B, self.d)
        self.a = h.new_zeros(self.R, self.H * self.d)
        self.scratch = h.new_empty(self.R * (self.D + 2 * self.I))

    def qkv(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Layer i's rotated q [B, H, 1, d] and k, v [B, kvh, 1, d] (views, as the Llama attention makes them)."""
        wq, wk, wv, _, _, _, _, w1, eps1, _, _ = self.layers[i]
        R, H, kvh, d = self.R, self.H, self.kvh, self.d
        q, k, v = self.h.new_empty(R, H, d), self.h.new_empty(R, kvh, d), self.h.new_empty(R, kvh, d)
        if fewrows.library().layer_qkv(self.h.data_ptr(), R, self.D, w1.data_ptr(), eps1, wq.data_ptr(), wk.data_ptr(),
                                       wv.data_ptr(), H, kvh, d, self.cos.data_ptr(), self.sin.data_ptr(),
                                       q.data_ptr(), k.data_ptr(), v.data_ptr(), self.scratch.data_ptr(),
                                       torch.get_num_threads()):
            raise ValueError("fused decode layer: shapes the kernel does not take")
        B = self.B
        return (q[:B, None].transpose(1, 2), k[:B, None].transpose(1, 2), v[:B, None].transpose(1, 2))

    def out(self, i: int, attn_output: torch.Tensor) -> None:
        """h += o(attn_output) and the MLP block, in place."""
        _, _, _, wo, wg, wu, wd, _, _, w2, eps2 = self.layers[i]
        self.a[: self.B] = attn_output.reshape(self.B, -1)
        if fewrows.library().layer_out(self.a.data_ptr(), self.h.data_ptr(), self.R, self.D, self.I, wo.data_ptr(),
                                       w2.data_ptr(), eps2, wg.data_ptr(), wu.data_ptr(), wd.data_ptr(),
                                       self.scratch.data_ptr(), torch.get_num_threads()):
            raise ValueError("fused decode layer: shapes the kernel does not take")

    def hidden(self) -> torch.Tensor:
        """The current hidden states [B, 1, D] (a copy: the buffer is written by the next layer)."""
        return self.h[: self.B].clone().view(self.B, 1, self.D)

    def set_hidden(self, h: torch.Tensor) -> None:
        self.h[: self.B] = h.reshape(self.B, self.D)
