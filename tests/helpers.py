"""What several test files share: the devices to run on, the CUDA-only mark, random weights and the relative error
(from sepp.testing, the one copy the tests and the comparison use), weight copies between sepp's C++-backed models
and the pure-Python reference, the operator tests' dtypes, tolerances, ids and NaN-poisoned allocations, and what the
property tests (test_properties_*.py) share: their example counts, the option values, the drawn seeds, operator
shapes and random inputs.

Plain functions and constants: test files import them (``from helpers import ...``); conftest.py holds only the
pytest hooks, the fixtures and the hypothesis profiles."""

from __future__ import annotations

import contextlib
import threading

import pytest
import torch
from hypothesis import settings
from hypothesis import strategies as st

from sepp.testing import randomize_, randomize_norms_, rel_err

__all__ = [
    "BLOCKS",
    "DEVICES",
    "DTYPES",
    "GATES",
    "SQUEEZES",
    "STRATEGIES",
    "TOL",
    "copy_state",
    "cuda_only",
    "dtype_id",
    "examples",
    "op_shapes",
    "poisoned_memory",
    "random_input",
    "randomize_",
    "randomize_norms_",
    "rel_err",
    "seeds",
    "shape_id",
]

# "cpu", and "cuda" where a GPU is present: the device parameter of the operator tests.
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
_skip_without_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# The operators' relative error bounds against a float64 formula (inputs rounded to the dtype first, so only the
# op's own error), and the dtypes they are tested in.
TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


def cuda_only(f):
    """Mark a test ``cuda`` and skip it where no CUDA device is."""
    return pytest.mark.cuda(_skip_without_cuda(f))


def dtype_id(d: torch.dtype) -> str:
    return str(d).replace("torch.", "")


def shape_id(s) -> str:
    return "x".join(map(str, s))


def copy_state(src: torch.nn.Module, dst: torch.nn.Module) -> None:
    """dst gets src's parameters and buffers; strict (same names and shapes)."""
    dst.load_state_dict(src.state_dict(), strict=True)


@contextlib.contextmanager
def poisoned_memory():
    """Every new tensor torch allocates is filled with NaN (torch's deterministic mode), so an output element a
    kernel forgets to write shows up as NaN."""
    fill = torch.utils.deterministic.fill_uninitialized_memory
    det = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.utils.deterministic.fill_uninitialized_memory = fill
        torch.use_deterministic_algorithms(det)


# ------------------------------------------------------------------------------------------ property tests


def examples(share: float):
    """This test's example count: ``share`` of the profile's, per parametrized case (an example of a model test takes
    ~300 ms, of an operator or error test ~1 ms)."""
    return settings(max_examples=max(1, round(settings.default.max_examples * share)))


seeds = st.integers(0, 2**32 - 1)

# The values of ResNet's string options.
SQUEEZES = ["avg", "max", "avgmax"]
GATES = ["sigmoid", "hard_sigmoid", "tanh"]
STRATEGIES = ["standard", "pre", "post", "identity"]
BLOCKS = ["basic", "bottleneck"]

# [N, C, H, W] of the SE operators' random inputs, valid and invalid.
op_shapes = st.tuples(st.integers(1, 4), st.integers(1, 80), st.integers(1, 17), st.integers(1, 17))


def random_input(shape, dtype, seed, channels_last=False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


# Model options that optimize_for_inference must fold like eager (test_inference.py, test_inference_cuda.py).
INFERENCE_OPTIONS = [
    dict(se_strategy="pre"),
    dict(se_strategy="post"),
    dict(se_strategy="identity"),
    dict(squeeze="max"),
    dict(squeeze="avgmax"),
    dict(gate="hard_sigmoid"),
    dict(gate="tanh"),
    dict(se_bias=False),
    dict(relu_before_se=True),
    dict(stride_in_1x1=True),
    dict(stem_pool_ceil_mode=True),
    dict(num_classes=0),
    dict(num_classes=7, in_chans=1),
    dict(se=(False, True, False, True)),
    dict(reduction=4),
]


def run_in_threads(work, n: int) -> None:
    """Runs work(0), ..., work(n - 1) on n threads released together, waits for them all, and raises here, in the
    test's thread, the first exception one of them raised."""
    start = threading.Barrier(n)
    errors = []

    def run(i):
        try:
            start.wait()
            work(i)
        except BaseException as e:  # re-raised below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
