"""sepp-bench, the C++ executable: its arguments, its JSON, given weights and inputs, every timm name. Nothing here
asserts a timing."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
from safetensors.torch import load_file, save_file

import sepp
import sepp.bench as sb
from sepp.testing import randomize_norms_


def _exe() -> str:
    exe = sb.sepp_bench_executable()
    assert exe is not None and exe.is_file(), "sepp-bench is not installed with sepp (or set SEPP_BENCH_EXE)"
    return str(exe)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([_exe(), *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "args, expect",
    [
        (["--model", "se_resnet51"], "--model: unknown model 'se_resnet51'"),
        (["--batch-size", "0"], "--batch-size: expected an integer >= 1, got 0"),
        (["--batch-size", "1,x"], "--batch-size: expected an integer, got 'x'"),
        (["--image-size", "16"], "--image-size: expected an integer >= 32"),
        (["--dtype", "float64"], "--dtype: expected float32, float16 or bfloat16, got 'float64'"),
        (["--device", "tpu"], "--device: expected cpu or cuda, got 'tpu'"),
        (["--iters"], "--iters: expected a value"),
        (["--min-time", "-1"], "--min-time: expected seconds"),
        (["--min-time", "2x"], "--min-time: expected seconds"),
        (["--frobnicate"], "unknown argument '--frobnicate'"),
    ],
)
def test_sepp_bench_bad_arguments_exit_2_with_one_line(args, expect):
    p = _run(*args)
    assert p.returncode == 2, p
    assert p.stdout == ""
    assert p.stderr.count("\n") == 1 and expect in p.stderr, p.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_sepp_bench_cuda_without_gpu_exits_2():
    p = _run("--device", "cuda")
    assert p.returncode == 2 and p.stderr.strip() == "sepp-bench: --device cuda: no CUDA device is available"


def test_sepp_bench_json_schema(tmp_path):
    out = tmp_path / "r.json"
    p = _run(
        "--model",
        "se_resnet18",
        "--image-size",
        "32",
        "--batch-size",
        "1,2",
        "--iters",
        "3",
        "--warmup",
        "1",
        "--threads",
        "1",
        "--json",
        str(out),
    )
    assert p.returncode == 0, p.stderr
    assert "| batch | iters | p50 ms | p90 ms | p99 ms | img/s | peak RSS MiB |" in p.stdout
    r = json.loads(out.read_text())
    assert r["schema"] == "sepp-bench/1"
    assert r["sepp_version"] == sepp.__version__
    assert {
        k: r[k] for k in ("model", "device", "dtype", "image_size", "channels_last", "threads", "warmup", "timer")
    } == {
        "model": "se_resnet18",
        "device": "cpu",
        "dtype": "float32",
        "image_size": 32,
        "channels_last": False,
        "threads": 1,
        "warmup": 1,
        "timer": "steady_clock",
    }
    assert [x["batch"] for x in r["results"]] == [1, 2]
    for x in r["results"]:
        assert set(x) == {"batch", "iters", "p50_ms", "p90_ms", "p99_ms", "images_per_s", "peak_mib", "samples_ms"}
        assert x["iters"] == 3 and len(x["samples_ms"]) == 3
        assert sorted(x["samples_ms"])[1] == pytest.approx(x["p50_ms"], rel=1e-4)
        assert 0 < x["p50_ms"] <= x["p90_ms"] <= x["p99_ms"]
        assert x["images_per_s"] == pytest.approx(1000 * x["batch"] / x["p50_ms"], rel=1e-4)
        assert x["peak_mib"] > 0
    assert not (tmp_path / "r.json.tmp").exists()


@pytest.mark.parametrize("channels_last", [False, True])
def test_sepp_bench_runs_given_weights_on_given_input(tmp_path, channels_last):
    m = randomize_norms_(sepp.se_resnet18(num_classes=10), seed=3).eval()
    # num_classes differs from the factory default, so the executable must refuse these weights ...
    x = torch.randn(2, 3, 40, 40)
    sepp.save_weights(m, tmp_path / "w.safetensors")
    save_file({"input": x}, str(tmp_path / "x.safetensors"))
    p = _run("--model", "se_resnet18", "--weights", str(tmp_path / "w.safetensors"), "--iters", "1")
    assert p.returncode == 1 and "fc.weight" in p.stderr, p.stderr
    # ... and take weights of the right shape, run them on the given input and write the logits.
    m = randomize_norms_(sepp.se_resnet18(), seed=3).eval()
    sepp.save_weights(m, tmp_path / "w.safetensors")
    extra = ["--channels-last"] if channels_last else []
    p = _run(
        "--model",
        "se_resnet18",
        "--weights",
        str(tmp_path / "w.safetensors"),
        "--input",
        str(tmp_path / "x.safetensors"),
        "--output",
        str(tmp_path / "y.safetensors"),
        "--iters",
        "1",
        "--warmup",
        "0",
        *extra,
    )
    assert p.returncode == 0, p.stderr
    assert "image=40" in p.stdout and "\n| 2 | 1 |" in p.stdout
    with torch.inference_mode():
        want = m(x)
    got = load_file(str(tmp_path / "y.safetensors"))["output"]
    assert got.shape == (2, 1000)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_sepp_bench_rejects_a_bad_input_file(tmp_path):
    save_file({"image": torch.zeros(1, 3, 32, 32)}, str(tmp_path / "a.safetensors"))
    save_file({"input": torch.zeros(1, 4, 32, 32)}, str(tmp_path / "b.safetensors"))
    p = _run("--input", str(tmp_path / "a.safetensors"))
    assert p.returncode == 1 and "no tensor named 'input'" in p.stderr
    p = _run("--input", str(tmp_path / "b.safetensors"))
    assert p.returncode == 1 and "expected a tensor of shape [N, 3, H, W], got [1, 4, 32, 32]" in p.stderr


TIMM_FAMILY = [n for n in sepp.model_names() if n.startswith(("seres", "senet", "legacy_"))]


@pytest.mark.parametrize("name", TIMM_FAMILY)
def test_sepp_bench_runs_every_timm_name_optimized(tmp_path, name):
    out = tmp_path / "r.json"
    p = _run("--model", name, "--image-size", "64", "--iters", "1", "--warmup", "0", "--optimize", "--json", str(out))
    assert p.returncode == 0, p.stderr
    r = json.loads(out.read_text())
    assert r["model"] == name and r["results"][0]["iters"] == 1


def test_sepp_bench_optimizes_for_each_batch_size_in_turn_with_a_repeated_one_too(tmp_path):
    # The eager model is freed after the last batch size's optimization, so that the peak is a deployment's; every
    # earlier batch size, the repeated one included, must still find it.
    out = tmp_path / "r.json"
    p = _run("--model", "se_resnet18", "--image-size", "32", "--batch-size", "2,1,2", "--iters", "1", "--warmup", "0",
             "--optimize", "--json", str(out))  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert [r["batch"] for r in json.loads(out.read_text())["results"]] == [2, 1, 2]
