"""pytest hooks and fixtures: fresh random inputs every run, the seed printed so a failure can be replayed with
SEPP_TEST_SEED. The shared functions and constants are in helpers.py (test files import from there, not from here)."""

from __future__ import annotations

import os
import random
import zlib

import pytest
import torch

SEED = int(os.environ.get("SEPP_TEST_SEED", random.SystemRandom().randrange(2**31)))


def pytest_report_header(config):
    return f"sepp tests: random seed {SEED} (replay with SEPP_TEST_SEED={SEED})"


def seed_of(nodeid: str) -> int:
    """The seed of the test ``nodeid`` in this run: SEED plus a hash of the node id that is the same in every process
    (crc32; Python's str hash is salted per process), so SEPP_TEST_SEED replays every test's values."""
    return SEED + zlib.crc32(nodeid.encode("utf-8"))


@pytest.fixture(autouse=True)
def _seeded(request):
    # A fresh seed per run, distinct per test; reproducible through SEPP_TEST_SEED.
    torch.manual_seed(seed_of(request.node.nodeid))
    yield
