"""The out-of-tree C++ app (examples/cpp, built against the installed package by scripts/test.sh) gives the logits
Python gives, from weights saved in Python."""

from __future__ import annotations

import os
import subprocess

import pytest
import torch

import sepp
from sepp.weights import load_tensors, save_tensors
from conftest import randomize_

CLASSIFY = os.environ.get("SEPP_EXAMPLE_CLASSIFY")


@pytest.mark.skipif(not CLASSIFY, reason="SEPP_EXAMPLE_CLASSIFY unset: scripts/test.sh builds the app and sets it")
def test_cpp_app_logits_equal_python(tmp_path):
    model = randomize_(sepp.se_resnet18()).eval()
    sepp.save_weights(model, tmp_path / "w.safetensors")
    x = torch.randn(2, 3, 64, 64)
    save_tensors({"input": x}, tmp_path / "x.safetensors")
    proc = subprocess.run([CLASSIFY, "--model", "se_resnet18", "--weights", str(tmp_path / "w.safetensors"),
                           "--input", str(tmp_path / "x.safetensors"), "--logits", str(tmp_path / "y.safetensors")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("image ") == 2
    with torch.no_grad():
        expected = model(x)
    logits = load_tensors(tmp_path / "y.safetensors")["logits"]
    torch.testing.assert_close(logits, expected)
    top1 = int(proc.stdout.split("image 0:")[1].split()[0])
    assert top1 == int(expected[0].argmax())


@pytest.mark.skipif(not CLASSIFY, reason="SEPP_EXAMPLE_CLASSIFY unset: scripts/test.sh builds the app and sets it")
def test_cpp_app_reports_a_bad_weight_file(tmp_path):
    (tmp_path / "w.safetensors").write_bytes(b"\x00" * 3)
    proc = subprocess.run([CLASSIFY, "--weights", str(tmp_path / "w.safetensors")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1 and "truncated file" in proc.stderr
