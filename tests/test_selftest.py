"""python -m sepp.selftest: every check passes here, and a wrong or crashing kernel is reported, not passed."""

from __future__ import annotations

import pytest
import torch

import sepp.ops
from sepp import selftest


@pytest.fixture(scope="module")
def cpu_checks():
    return selftest.run(["cpu"])


def test_every_cpu_check_passes(cpu_checks):
    failed = [c for c in cpu_checks if not c.ok]
    assert not failed, selftest.table(failed)


def test_the_checks_cover_each_op_dtype_and_layout_and_the_models(cpu_checks):
    names = {c.name.split()[0] for c in cpu_checks}
    assert {"se_squeeze", "se_scale", "se_excite", "model"} <= names
    assert {c.dtype for c in cpu_checks} == {"float64", "float32", "bfloat16"}
    assert {c.layout for c in cpu_checks} >= {"nchw", "nhwc"}
    assert any("optimized" in c.name for c in cpu_checks)


def test_a_wrong_kernel_fails_its_checks_and_the_exit_status(monkeypatch, capsys):
    right = sepp.ops.se_scale

    def forgets_the_identity(x, scale, identity=None, relu=False):
        return right(x, scale, None, relu)

    monkeypatch.setattr(sepp.ops, "se_scale", forgets_the_identity)
    ops_only = selftest.run(["cpu"], models=False)
    failed = [c for c in ops_only if not c.ok]
    assert failed and all(c.name.startswith("se_scale") for c in failed)
    monkeypatch.setattr(selftest, "run", lambda devices, seed: ops_only)
    assert selftest.main(["--device", "cpu"]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_a_crashing_kernel_is_a_failed_check_with_its_message(monkeypatch):
    def crashes(*args, **kwargs):
        raise RuntimeError("kernel launch failed\nmore")

    monkeypatch.setattr(sepp.ops, "se_squeeze", crashes)
    failed = [c for c in selftest.run(["cpu"], models=False) if not c.ok]
    assert failed and {c.message for c in failed} == {"kernel launch failed"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_without_cuda_it_says_cuda_was_not_checked(monkeypatch, capsys, cpu_checks):
    monkeypatch.setattr(selftest, "run", lambda devices, seed: cpu_checks if devices == ["cpu"] else [])
    assert selftest.main([]) == 0
    assert capsys.readouterr().out.rstrip().endswith("CUDA: not checked (no CUDA device).")
    assert selftest.main(["--device", "cuda"]) == 2
