"""The benchmarks' interfaces: sepp-bench's arguments and JSON, the comparison's arguments, JSON schema, output check
and chart. Nothing here asserts a timing."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import torch

import sepp
import sepp.bench as sb
from safetensors.torch import load_file, save_file


def _exe() -> str:
    exe = sb.sepp_bench_executable()
    assert exe is not None and exe.is_file(), "sepp-bench is not installed with sepp (or set SEPP_BENCH_EXE)"
    return str(exe)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([_exe(), *args], capture_output=True, text=True, timeout=300)


# --------------------------------------------------------------------------------------------------------- sepp-bench

@pytest.mark.parametrize("args, expect", [
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
])
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
    p = _run("--model", "se_resnet18", "--image-size", "32", "--batch-size", "1,2", "--iters", "3", "--warmup", "1",
             "--threads", "1", "--json", str(out))
    assert p.returncode == 0, p.stderr
    assert "| batch | iters | p50 ms | p90 ms | p99 ms | img/s | peak RSS MiB |" in p.stdout
    r = json.loads(out.read_text())
    assert r["schema"] == "sepp-bench/1"
    assert r["sepp_version"] == sepp.__version__
    assert {k: r[k] for k in ("model", "device", "dtype", "image_size", "channels_last", "threads", "warmup",
                               "timer")} == {"model": "se_resnet18", "device": "cpu", "dtype": "float32",
                                             "image_size": 32, "channels_last": False, "threads": 1, "warmup": 1,
                                             "timer": "steady_clock"}
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
    m = sb.realistic_weights_(sepp.se_resnet18(num_classes=10), seed=3).eval()
    # num_classes differs from the factory default, so the executable must refuse these weights ...
    x = torch.randn(2, 3, 40, 40)
    sepp.save_weights(m, tmp_path / "w.safetensors")
    save_file({"input": x}, str(tmp_path / "x.safetensors"))
    p = _run("--model", "se_resnet18", "--weights", str(tmp_path / "w.safetensors"), "--iters", "1")
    assert p.returncode == 1 and "fc.weight" in p.stderr, p.stderr
    # ... and take weights of the right shape, run them on the given input and write the logits.
    m = sb.realistic_weights_(sepp.se_resnet18(), seed=3).eval()
    sepp.save_weights(m, tmp_path / "w.safetensors")
    extra = ["--channels-last"] if channels_last else []
    p = _run("--model", "se_resnet18", "--weights", str(tmp_path / "w.safetensors"), "--input",
             str(tmp_path / "x.safetensors"), "--output", str(tmp_path / "y.safetensors"), "--iters", "1",
             "--warmup", "0", *extra)
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


# ------------------------------------------------------------------------------------------------- the comparison

@pytest.mark.parametrize("argv, expect", [
    (["--model", "seresnet50"], "--model: unknown model 'seresnet50'"),
    (["--batch-size", "0"], "--batch-size: expected an integer >= 1, got 0"),
    (["--image-size", "8"], "--image-size: expected an integer >= 32, got 8"),
    (["--dtypes", "float32,int8"], "--dtypes: expected a comma list of float32, bfloat16, float16, got float32,int8"),
    (["--contenders", "tensorrt"], "--contenders: expected a comma list of sepp,"),
    (["--skip", "foo"], "--skip: expected a comma list of"),
    (["--rounds", "0"], "--rounds: expected an integer >= 1, got 0"),
    (["--device", "npu"], "--device: invalid choice: 'npu'"),
])
def test_compare_bad_arguments_exit_2(argv, expect, capsys):
    with pytest.raises(SystemExit) as e:
        sb.parse_args(argv)
    assert e.value.code == 2
    assert expect in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_compare_cuda_without_gpu_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        sb.parse_args(["--device", "cuda"])
    assert e.value.code == 2 and "--device cuda: no CUDA device is available" in capsys.readouterr().err


RESULT_KEYS = {"name", "kind", "model", "dtype", "layout", "status", "reason", "note", "setup_s", "times_ms",
               "median_ms", "p90_ms", "images_per_s", "ratio_to_sepp", "max_abs_diff", "rel_diff", "baseline",
               "compare_to"}


def _check_report(report: dict, model: str) -> None:
    assert report["schema"] == sb.SCHEMA
    assert report["command"].startswith("python -m sepp.bench ")
    assert {"cpu", "cores", "isa"} <= set(report["machine"])
    assert {"torch", "sepp", "python"} <= set(report["versions"])
    assert report["settings"]["model"] == model
    for r in report["results"]:
        assert set(r) == RESULT_KEYS
        assert r["status"] in ("ok", "skipped", "mismatch", "failed")
        if r["status"] == "ok":
            assert r["median_ms"] > 0 and r["ratio_to_sepp"] > 0
            assert r["images_per_s"] == pytest.approx(report["settings"]["batch_size"] * 1e3 / r["median_ms"])
            if r["model"] == model:
                assert r["rel_diff"] <= report["settings"]["tolerance"][r["dtype"]]
        else:
            assert r["reason"] and r["median_ms"] is None


def test_compare_end_to_end(tmp_path, capsys):
    """Every contender on a small model: the report is complete, every installed contender agrees with sepp, the
    chart is a PNG, and the table is printed."""
    argv = ["--model", "se_resnet50", "--image-size", "32", "--batch-size", "2", "--iters", "4", "--rounds", "2",
            "--warmup", "1",
            "--dtypes", "float32", "--threads", "2", "--output-dir", str(tmp_path)]
    assert sb.main(argv) == 0
    out = capsys.readouterr().out
    assert "| contender | dtype | layout | median ms | p90 ms | img/s | ratio to sepp | max abs diff | status |" in out
    assert "SE overhead (sepp, float32): se_resnet50" in out
    assert "SE overhead (sepp optimized, float32): se_resnet50" in out
    [path] = tmp_path.glob("*_cpu_se_resnet50_b2.json") if not torch.cuda.is_available() else \
        tmp_path.glob("*_cuda_se_resnet50_b2.json")
    report = json.loads(path.read_text())
    _check_report(report, "se_resnet50")
    by_kind = {}
    for r in report["results"]:
        by_kind.setdefault(r["kind"], []).append(r)
    assert set(by_kind) == set(sb.CONTENDER_KINDS)
    must_run = ["sepp", "sepp-optimized", "sepp-cpp", "se-overhead", "reference", "timm", "compile"]
    if not torch.cuda.is_available():
        must_run += [k for k in ("onnxruntime", "openvino") if importlib.util.find_spec(k)]
    for kind in must_run:
        assert all(r["status"] == "ok" for r in by_kind[kind]), by_kind[kind]
    # the fastest sepp row (eager or optimized) is the baseline of its dtype
    assert min(r["ratio_to_sepp"] for r in by_kind["sepp"] + by_kind["sepp-optimized"]) == pytest.approx(1.0)
    assert all(len(r["times_ms"]) == 4 for r in by_kind["reference"])
    assert all(len(r["times_ms"]) == 4 for r in by_kind["sepp-cpp"])  # 2 runs of the executable, 2 samples each
    chart = tmp_path / path.name.replace(".json", ".png")
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_flags_a_wrong_contender_and_survives_a_broken_one(tmp_path):
    args = sb.parse_args(["--model", "se_resnet18", "--image-size", "32", "--iters", "2", "--warmup", "0",
                          "--dtypes", "float32", "--contenders", "sepp", "--output-dir", str(tmp_path), "--no-chart"])
    sepp_runs = []

    def wrong():
        m = sepp.se_resnet18().eval()  # fresh weights, not the shared ones
        x = torch.randn(1, 3, 32, 32)

        def run():
            sepp_runs.append(1)
            with torch.inference_mode():
                return m(x)
        return run

    def broken():
        raise RuntimeError("kaput\nmore")

    def zeros():
        return lambda: torch.zeros(1, 1000)

    extra = [sb.Contender("wrong weights", "sepp", "float32", "nchw", wrong, model="se_resnet18"),
             sb.Contender("broken", "sepp", "float32", "nchw", broken, model="se_resnet18"),
             sb.Contender("zeros", "sepp", "float32", "nchw", zeros, model="se_resnet18")]
    report = sb.run(args, [], extra)
    _check_report(report, "se_resnet18")
    r = {x["name"]: x for x in report["results"]}
    assert [x["status"] for x in report["results"] if x["name"] == "sepp"] == ["ok", "ok"]
    assert r["wrong weights"]["status"] == "mismatch" and "relative" in r["wrong weights"]["reason"]
    assert len(sepp_runs) == 1  # checked once, never timed
    assert r["broken"]["status"] == "failed" and r["broken"]["reason"] == "RuntimeError: kaput"
    assert r["zeros"]["status"] == "mismatch" and r["zeros"]["rel_diff"] == pytest.approx(1.0)
    assert report["chart_path"] is None


def test_compare_runs_as_a_module(tmp_path):
    p = subprocess.run([sys.executable, "-m", "sepp.bench", "--model", "resnet18", "--image-size", "32", "--iters",
                        "1", "--warmup", "0", "--dtypes", "float32", "--contenders", "sepp,reference",
                        "--output-dir", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "| sepp.reference eager | float32 | nchw |" in p.stdout
    assert len(list(tmp_path.glob("*.json"))) == 1 and len(list(tmp_path.glob("*.png"))) == 1
    p = subprocess.run([sys.executable, "-m", "sepp.bench", "--model", "nope"], capture_output=True, text=True)
    assert p.returncode == 2 and "--model: unknown model 'nope'" in p.stderr
