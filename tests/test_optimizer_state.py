"""hrlaif/trainers/distributed.py: Adam's moments created up front train exactly as lazily created ones."""
from __future__ import annotations

import pytest
import torch

from hrlaif.trainers.distributed import allocate_adam_state


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    m.unused = torch.nn.Parameter(torch.ones(2))  # trainable but never in the loss: never stepped
    return m


def _train(m: torch.nn.Module, opt: torch.optim.Optimizer, steps: int = 3) -> None:
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(4, 6, generator=g)
        m(x).square().mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


@pytest.mark.parametrize("kw", [{"fused": True}, {}, {"foreach": False}, {"amsgrad": True, "fused": True},
                                {"amsgrad": True}])
def test_preallocated_adam_state_trains_bit_for_bit_like_the_lazy_one(kw):
    lazy, early = _model(), _model()
    opt_lazy = torch.optim.AdamW(lazy.parameters(), lr=0.1, weight_decay=0.01, **kw)
    opt_early = torch.optim.AdamW(early.parameters(), lr=0.1, weight_decay=0.01, **kw)
    allocate_adam_state(opt_early)
    assert all(len(opt_early.state[p]) >= 3 for p in early.parameters())
    _train(lazy, opt_lazy)
    _train(early, opt_early)
    for a, b in zip(lazy.parameters(), early.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(early.unused, torch.ones(2))  # pre-allocated, yet not stepped without a gradient
    for p_lazy, p_early in zip(lazy.parameters(), early.parameters()):
        s_lazy, s_early = opt_lazy.state[p_lazy], opt_early.state[p_early]
        for k, v in s_lazy.items():  # same keys, dtypes, devices and values wherever the lazy one has state
            assert torch.equal(v, s_early[k]) and v.dtype == s_early[k].dtype and v.device == s_early[k].device


def test_a_loaded_state_is_kept():
    m = _model()
    opt = torch.optim.AdamW(m.parameters(), lr=0.1)
    _train(m, opt, 1)
    before = {id(p): {k: v.clone() for k, v in opt.state[p].items()} for p in m.parameters() if opt.state[p]}
    allocate_adam_state(opt)
    for p in m.parameters():
        if id(p) in before:
            assert all(torch.equal(v, opt.state[p][k]) for k, v in before[id(p)].items())
