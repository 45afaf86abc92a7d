"""safetensors weights: Python and C++ writers and readers agree both ways; every bad file gives a clear error and
leaves the model unchanged; a crash mid-save leaves the previous file whole."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import textwrap

import pytest
import safetensors.torch
import torch
from helpers import randomize_

import sepp
from sepp import _C

SMALL = dict(block="basic", layers=(1, 1, 1, 1), num_classes=5, se=True)

# (writer, reader) pairs: Python's sepp.save_weights / sepp.load_weights and the C++ sepp::save_weights / load_weights
WRITERS = {"python": lambda m, p: sepp.save_weights(m, p), "cpp": lambda m, p: _C.save_weights(m._cpp, str(p))}
READERS = {"python": lambda m, p: sepp.load_weights(m, p), "cpp": lambda m, p: _C.load_weights(m._cpp, str(p))}


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16], ids=["f32", "f64", "f16", "bf16"]
)
def test_round_trip_gives_identical_outputs(tmp_path, writer, reader, dtype):
    src = randomize_(sepp.ResNet(**SMALL)).to(dtype).eval()
    path = tmp_path / "w.safetensors"
    WRITERS[writer](src, path)
    dst = sepp.ResNet(**SMALL).to(dtype).eval()
    READERS[reader](dst, path)
    for (k, a), (_, b) in zip(src.state_dict().items(), dst.state_dict().items()):
        assert a.dtype == b.dtype and torch.equal(a, b), k
    x = torch.randn(2, 3, 32, 32).to(dtype)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))


def test_cpp_file_is_standard_safetensors(tmp_path):
    m = randomize_(sepp.ResNet(**SMALL))
    path = tmp_path / "w.safetensors"
    _C.save_weights(m._cpp, str(path))
    tensors = safetensors.torch.load_file(str(path))  # the reference implementation reads it
    assert set(tensors) == set(m.state_dict())
    assert all(torch.equal(tensors[k], v) for k, v in m.state_dict().items())
    header_len = struct.unpack("<Q", path.read_bytes()[:8])[0]
    assert header_len % 8 == 0
    assert _C.read_safetensors(str(path)).keys() == tensors.keys()


def test_loading_converts_dtype(tmp_path):
    src = randomize_(sepp.ResNet(**SMALL)).double()
    sepp.save_weights(src, tmp_path / "w.safetensors")
    for load in READERS.values():
        dst = sepp.ResNet(**SMALL)
        load(dst, tmp_path / "w.safetensors")
        assert dst.conv1.weight.dtype == torch.float32
        torch.testing.assert_close(dst.conv1.weight, src.conv1.weight.float())


# ---------------------------------------------------------------------------- bad files
def raw_file(path, header, data=b"", header_len=None):
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text) if header_len is None else header_len) + text + data)
    return path


def valid_state_file(tmp_path, model, drop=None, add=None, reshape=None):
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if drop:
        del state[drop]
    if add:
        state[add] = torch.zeros(2)
    if reshape:
        state[reshape] = torch.zeros(3, 3)
    path = tmp_path / "w.safetensors"
    safetensors.torch.save_file(state, str(path))
    return path


F32_4 = struct.pack("<4f", 1, 2, 3, 4)
# case -> (writes the bad file, what the C++ reader says exactly)
BAD_FILES = {
    "truncated": (lambda p: (p.write_bytes(b"\x10\x00\x00"), p)[1], "truncated file: 3 bytes"),
    "header_past_end": (
        lambda p: raw_file(p, {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, F32_4, header_len=10_000),
        "runs past the end of the file",
    ),
    "malformed_json": (lambda p: raw_file(p, b'{"a": {"dtype": "F32",'), "not valid JSON"),
    "overlap": (
        lambda p: raw_file(
            p,
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
            },
            F32_4[:12],
        ),
        "overlaps the tensor before it",
    ),
    "out_of_range": (
        lambda p: raw_file(p, {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, F32_4[:8]),
        "out of range",
    ),
    "bytes_disagree_with_shape": (
        lambda p: raw_file(p, {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}, F32_4),
        "needs 12 bytes but data_offsets give 16",
    ),
    "unknown_dtype": (
        lambda p: raw_file(p, {"a": {"dtype": "F12", "shape": [4], "data_offsets": [0, 16]}}, F32_4),
        "unknown dtype 'F12'",
    ),
    "gap": (
        lambda p: raw_file(p, {"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, F32_4),
        "leaves a gap of 8 bytes",
    ),
}


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_files_raise_and_leave_the_model_unchanged(tmp_path, reader, case):
    make, cpp_message = BAD_FILES[case]
    path = make(tmp_path / f"{case}.safetensors")
    model = randomize_(sepp.ResNet(**SMALL))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError) as info:
        READERS[reader](model, path)
    message = str(info.value)
    assert str(path) in message  # names the file
    if reader == "cpp":
        assert cpp_message in message
    else:  # our framing, then the safetensors package's own reason
        reason = message.split("not a valid safetensors file:", 1)
        assert len(reason) == 2 and reason[1].strip()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("kind", ["missing", "unexpected", "shape"])
def test_name_and_shape_mismatches_are_listed(tmp_path, reader, kind):
    model = randomize_(sepp.ResNet(**SMALL))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    path = valid_state_file(
        tmp_path,
        model,
        drop="layer2.0.se.fc1.bias" if kind == "missing" else None,
        add="head.weight" if kind == "unexpected" else None,
        reshape="fc.bias" if kind == "shape" else None,
    )
    with pytest.raises(ValueError) as info:
        READERS[reader](model, path)
    text = str(info.value)
    assert str(path) in text and "unchanged" in text
    assert {
        "missing": "missing: layer2.0.se.fc1.bias",
        "unexpected": "unexpected: head.weight",
        "shape": "shape mismatch: fc.bias (file [3, 3], model [5])",
    }[kind] in text
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_missing_file_is_a_clear_error(tmp_path):
    for load in READERS.values():
        with pytest.raises(ValueError, match="cannot (open|read) the file"):
            load(sepp.ResNet(**SMALL), tmp_path / "nope.safetensors")


# ---------------------------------------------------------------------------- atomic saves
CRASH_SCRIPT = textwrap.dedent("""
    import resource, signal, sys, sepp
    from sepp import _C
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it; by default the kernel kills the process
    model = sepp.se_resnet50()            # ~112 MB of weights
    resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 20, 4 << 20))  # the kernel kills us at 4 MB: SIGXFSZ
    if sys.argv[2] == "cpp":
        _C.save_weights(model._cpp, sys.argv[1])
    else:
        sepp.save_weights(model, sys.argv[1])
""")


@pytest.mark.parametrize("writer", WRITERS)
def test_crash_mid_save_leaves_the_previous_file(tmp_path, writer):
    target = tmp_path / "w.safetensors"
    small = randomize_(sepp.ResNet(**SMALL))
    sepp.save_weights(small, target)
    before = target.read_bytes()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # the same sepp as this process
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(target), writer], capture_output=True, env=env, timeout=300
    )
    assert proc.returncode == -signal.SIGXFSZ, proc.stderr.decode()[-2000:]  # it really died mid-write
    assert target.read_bytes() == before
    restored = sepp.ResNet(**SMALL)
    sepp.load_weights(restored, target)
    _C.load_weights(restored._cpp, str(target))


@pytest.mark.parametrize("writer", WRITERS)
def test_failed_save_raises_and_cleans_up(tmp_path, writer):
    target = tmp_path / "missing_dir" / "w.safetensors"
    with pytest.raises((ValueError, OSError), match="missing_dir|No such file"):
        WRITERS[writer](sepp.ResNet(**SMALL), target)
    assert not target.parent.exists() or not any(target.parent.iterdir())


def test_saved_file_has_the_usual_permissions(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    sepp.save_weights(sepp.ResNet(**SMALL), tmp_path / "w.safetensors")
    assert (tmp_path / "w.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask
