from __future__ import annotations

import pytest

from hrlaif.core.errors import UserError
from hrlaif.trainers.freezing import train_top_layers


def test_only_top_blocks_train(tiny_model_dir):
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    total = sum(p.numel() for p in m.parameters())
    n = train_top_layers(m, 1)
    assert 0 < n < total
    assert not m.model.embed_tokens.weight.requires_grad
    assert all(not p.requires_grad for p in m.model.layers[0].parameters())
    assert all(p.requires_grad for p in m.model.layers[-1].parameters())
    assert m.model.norm.weight.requires_grad
    assert train_top_layers(m, 0) == n  # 0 leaves the current state alone
    with pytest.raises(UserError):
        train_top_layers(m, -1)
