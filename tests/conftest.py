"""Shared helpers: fresh random inputs every run (the seed is printed so a failure can be replayed), and weight copies
between sepp's C++-backed models and the pure-Python reference."""

from __future__ import annotations

import os
import random

import pytest
import torch

SEED = int(os.environ.get("SEPP_TEST_SEED", random.SystemRandom().randrange(2**31)))


def pytest_report_header(config):
    return f"sepp tests: random seed {SEED} (replay with SEPP_TEST_SEED={SEED})"


@pytest.fixture(autouse=True)
def _seeded(request):
    # A fresh seed per run, distinct per test; reproducible through SEPP_TEST_SEED.
    torch.manual_seed(SEED + hash(request.node.nodeid) % 100_003)
    yield


def randomize_(model: torch.nn.Module) -> torch.nn.Module:
    """Random values in every parameter and buffer (BN statistics positive), so no zero-initialised BN or bias can hide
    a difference between two implementations."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            one = 1.0 if (p.dim() == 1 and name.endswith("weight")) else 0.0  # BN scales around 1
            p.copy_(torch.randn_like(p) * (0.5 if p.dim() > 1 else 0.2) + one)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn_like(b) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand_like(b) + 0.5)
    # Keep activations O(1) through deep networks: scale each conv by 1/sqrt(fan_in).
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 4:
                p.mul_(1.0 / (p[0].numel() ** 0.5))
            elif p.dim() == 2:
                p.mul_(1.0 / (p.shape[1] ** 0.5))
    return model


def copy_state(src: torch.nn.Module, dst: torch.nn.Module) -> None:
    """dst gets src's parameters and buffers; strict (same names and shapes)."""
    dst.load_state_dict(src.state_dict(), strict=True)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max(|b|, tiny): one number for 'agree to 1e-10 relative'."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300)) if b.numel() else 0.0
