"""The out-of-tree C++ app (examples/cpp, built against the installed package's CMake config) gives the logits Python
gives, from weights saved in Python.

scripts/test.sh builds the app and names it in SEPP_EXAMPLE_CLASSIFY; without that variable the ``classify`` fixture
builds it here, once per session, out of tree against the sepp package this process imports
(``cmake -DCMAKE_PREFIX_PATH=<sepp package folder>``, as a user's application would), so these tests never skip: a
missing CMake package or a broken build fails them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import randomize_

import sepp
from sepp.weights import load_tensors, save_tensors

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cpp"


def _tool(name: str):
    """``name`` next to this Python (a virtual environment's pip-installed cmake / ninja) or else on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


def _run_or_fail(cmd, what):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        pytest.fail(
            f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def classify(tmp_path_factory):
    """The example app's executable: SEPP_EXAMPLE_CLASSIFY's, or one built now against the importable sepp."""
    given = os.environ.get("SEPP_EXAMPLE_CLASSIFY")
    if given:
        return given
    package = Path(sepp.__file__).resolve().parent
    config = package / "lib" / "cmake" / "sepp" / "seppConfig.cmake"
    if not config.is_file():
        pytest.fail(
            f"SEPP_EXAMPLE_CLASSIFY is unset and the sepp package imported from {package} has no CMake "
            f"package ({config} is missing), so examples/cpp cannot be built against it: install sepp "
            f"(pip install .) or set SEPP_EXAMPLE_CLASSIFY to a built examples/cpp classify",
            pytrace=False,
        )
    if not (EXAMPLE / "CMakeLists.txt").is_file():
        pytest.fail(f"SEPP_EXAMPLE_CLASSIFY is unset and the example app's sources are not at {EXAMPLE}", pytrace=False)
    cmake = _tool("cmake")
    if cmake is None:
        pytest.fail("SEPP_EXAMPLE_CLASSIFY is unset and no cmake was found to build examples/cpp", pytrace=False)
    build = tmp_path_factory.mktemp("example-build")
    configure = [
        cmake,
        "-S",
        str(EXAMPLE),
        "-B",
        str(build),
        "-DCMAKE_BUILD_TYPE=Release",
        f"-DCMAKE_PREFIX_PATH={package}",
        # The torch this process runs (the package's seppConfig.cmake finds a torch beside it by itself;
        # a source-tree package has none beside it).
        f"-DTorch_DIR={Path(torch.utils.cmake_prefix_path) / 'Torch'}",
    ]
    ninja = _tool("ninja")
    if ninja is not None:
        configure += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"]
    _run_or_fail(configure, f"configuring examples/cpp against the sepp CMake package in {package}")
    _run_or_fail([cmake, "--build", str(build)], "building examples/cpp")
    exe = build / "classify"
    assert exe.is_file(), f"the build of examples/cpp made no {exe}"
    return str(exe)


def test_cpp_app_logits_equal_python(tmp_path, classify):
    model = randomize_(sepp.se_resnet18()).eval()
    sepp.save_weights(model, tmp_path / "w.safetensors")
    x = torch.randn(2, 3, 64, 64)
    save_tensors({"input": x}, tmp_path / "x.safetensors")
    proc = subprocess.run(
        [
            classify,
            "--model",
            "se_resnet18",
            "--weights",
            str(tmp_path / "w.safetensors"),
            "--input",
            str(tmp_path / "x.safetensors"),
            "--logits",
            str(tmp_path / "y.safetensors"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("image ") == 2
    with torch.no_grad():
        expected = model(x)
    logits = load_tensors(tmp_path / "y.safetensors")["logits"]
    torch.testing.assert_close(logits, expected)
    top1 = int(proc.stdout.split("image 0:")[1].split()[0])
    assert top1 == int(expected[0].argmax())


def test_cpp_app_reports_a_bad_weight_file(tmp_path, classify):
    (tmp_path / "w.safetensors").write_bytes(b"\x00" * 3)
    proc = subprocess.run(
        [classify, "--weights", str(tmp_path / "w.safetensors")], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 1 and "truncated file" in proc.stderr
