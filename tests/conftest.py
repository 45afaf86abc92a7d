"""pytest hooks and fixtures: fresh random inputs every run, the seed printed so a failure can be replayed with
SEPP_TEST_SEED; and the hypothesis profiles of the property tests (test_properties_*.py), loaded here, before any test
module is imported, so that every property test file runs under the same one. The shared functions and constants are
in helpers.py (test files import from there, not from here).

Hypothesis draws every value an example uses, torch's random numbers included (through a drawn seed), so an example
is replayed exactly from what hypothesis prints when it fails (the arguments, and a @reproduce_failure line). The
default profile, "ci", runs a bounded number of examples, derandomized: the same examples every run, about 30 s on
two idle cores for the three files. The "long" profile runs 10 times as many (8 to 12 minutes here), from a fresh random
start each run:

    cd tests && SEPP_HYPOTHESIS_PROFILE=long python -m pytest -q -p no:cacheprovider test_properties_*.py

(``--hypothesis-seed=N`` replays a long run; ``--hypothesis-show-statistics`` shows the timings)."""

from __future__ import annotations

import os
import random
import zlib

import pytest
import torch
from hypothesis import HealthCheck, settings

# The property tests' hypothesis profiles ("ci", the default, and "long"; see above).
_COMMON = dict(deadline=None, database=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=100, derandomize=True, **_COMMON)
settings.register_profile("long", max_examples=1000, **_COMMON)
settings.load_profile(os.environ.get("SEPP_HYPOTHESIS_PROFILE", "ci"))

# Drawn once, in the first process that imports this file, and left in the environment: pytest-xdist's workers start
# after the controller has imported it, so every worker runs under the seed the controller prints.
os.environ.setdefault("SEPP_TEST_SEED", str(random.SystemRandom().randrange(2**31)))
SEED = int(os.environ["SEPP_TEST_SEED"])

# Under pytest-xdist (the test command runs one worker per core, up to 4) the workers share the cores: each gets its
# share of intra-op threads, since OpenMP threads of several processes spinning on the same cores slow every test
# several times over. Subprocesses the tests start choose their own threads; the C++ tests and the soak test exercise
# the kernels' parallel paths.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, _cores // _WORKERS))


def pytest_report_header(config):
    return f"sepp tests: random seed {SEED} (replay with SEPP_TEST_SEED={SEED})"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    # Also at the end, where a quiet run (-q, as the test command runs) prints it: a failure's values can be replayed.
    terminalreporter.write_line(f"sepp tests: random seed {SEED} (replay with SEPP_TEST_SEED={SEED})")


def seed_of(nodeid: str) -> int:
    """The seed of the test ``nodeid`` in this run: SEED plus a hash of the node id that is the same in every process
    (crc32; Python's str hash is salted per process), so SEPP_TEST_SEED replays every test's values."""
    return SEED + zlib.crc32(nodeid.encode("utf-8"))


@pytest.fixture(autouse=True)
def _seeded(request):
    # A fresh seed per run, distinct per test; reproducible through SEPP_TEST_SEED.
    torch.manual_seed(seed_of(request.node.nodeid))
    yield
