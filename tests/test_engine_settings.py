"""The trainers' shared engine settings are declared once (hrlaif/trainers/configs.py EngineSettings), each
trainer keeps its own lr default, EngineConfig is built from them, and every settings dataclass checks
itself on construction: no caller calls validate() (read from the source)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from hrlaif.core.errors import UserError
from hrlaif.core.settings import fields_of
from hrlaif.trainers.configs import EngineSettings, PPOConfig, RMConfig, SFTConfig
from hrlaif.trainers.distributed import EngineConfig, ds_config

ROOT = Path(__file__).resolve().parents[1]
SHARED = ("lr", "weight_decay", "grad_clip", "zero_stage", "precision", "device", "seed")


def test_engine_fields_are_declared_once_and_shared():
    assert [f.name for f in fields_of(EngineSettings)] == list(SHARED)
    base = EngineSettings.__dataclass_fields__
    for cls in (SFTConfig, RMConfig, PPOConfig):
        assert issubclass(cls, EngineSettings)
        own = cls.__dataclass_fields__
        # the same Field objects (type, help, checks) except lr, whose default each trainer keeps
        assert all(own[n] is base[n] for n in SHARED if n != "lr"), cls
    assert (SFTConfig().lr, RMConfig().lr, PPOConfig().lr) == (2e-5, 1e-5, 1e-6)  # as before they were shared
    assert {(c().weight_decay, c().grad_clip, c().zero_stage, c().seed) for c in (SFTConfig, RMConfig, PPOConfig)} \
        == {(0.0, 1.0, 0, 1234)}


@pytest.mark.parametrize("make,problem", [
    (lambda: SFTConfig(lr=0), "lr: must be > 0 (got 0)"),
    (lambda: RMConfig(zero_stage=4), "zero_stage: must be one of 0, 1, 2, 3 (got 4)"),
    (lambda: PPOConfig(lr=-1), "lr: must be >= 0 (got -1)"),
    (lambda: PPOConfig(batch_size=6, mini_batch_size=4), "mini_batch_size: must divide batch_size 6 (got 4)"),
    (lambda: PPOConfig(precision="fp16"),
     "precision: must be one of auto, fp32, bf16 (got 'fp16'; did you mean 'bf16'?)"),
])
def test_a_config_checks_itself_on_construction(make, problem):
    with pytest.raises(UserError) as e:
        make()
    assert str(e.value) == problem


def test_engine_config_is_built_from_the_settings():
    cfg = PPOConfig(lr=3e-6, weight_decay=0.01, grad_clip=0.5, zero_stage=2, critic_lr=7e-6)
    actor = EngineConfig(cfg, micro_batch_size=2, grad_accum=3, device="cpu")
    assert actor.learning_rate == 3e-6 and EngineConfig(cfg, 2, 3, "cpu", lr=cfg.critic_lr).learning_rate == 7e-6
    assert ds_config(actor, world_size=2) == {
        "train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 3, "train_batch_size": 12,
        "zero_optimization": {"stage": 2}, "steps_per_print": 10**9, "wall_clock_breakdown": False,
        "gradient_clipping": 0.5}
    assert "gradient_clipping" not in ds_config(EngineConfig(SFTConfig(grad_clip=0.0), 1, 1, "cpu"), 1)
    with pytest.raises(UserError, match=r"micro_batch_size and grad_accum must be >= 1 \(got 0 and 1\)"):
        EngineConfig(cfg, micro_batch_size=0, grad_accum=1, device="cpu")


def test_no_caller_validates_by_hand():
    calls = [f"{p.relative_to(ROOT)}:{i}" for pkg in ("core", "judges", "trainers", "evalsets", "reports", "harness")
             for p in (ROOT / "hrlaif" / pkg).rglob("*.py") if p.name != "settings.py"
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
             if re.search(r"\w\.validate\(\)", line)]
    assert not calls, calls
