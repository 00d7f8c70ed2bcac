"""One seeding call for every stage (SFT, sampling, reward model, PPO, evaluation)."""
from __future__ import annotations


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (torch's covers every device).

    Stages that need order-independent randomness (PPO's per-prompt sampling, data order)
    derive their own generators from the seed as well; this covers whatever draws from the
    global ones (weight init of new heads, dropout, `generate`).
    """
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)  # NumPy takes 32-bit seeds only
    torch.manual_seed(seed)
