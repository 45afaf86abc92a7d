"""The comparison's floor (the model's FLOPs at the rate of a large 1x1 convolution, measured in the same run) and
its deployment memory (sepp-bench --optimize, ONNX Runtime and OpenVINO, each alone in a process of its own), and
how it keeps the parent idle while a child process is timed. Nothing here asserts a speed."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import sepp
import sepp.bench as sb
import sepp.bench.floor as sb_floor
import sepp.bench.memory as sb_memory
import sepp.bench.runners as sb_runners
from sepp.export import export_onnx


def _vm_hwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no /proc/self/status here")


def _args(tmp_path, *more):
    return sb.parse_args(
        ["--model", "resnet18", "--image-size", "32", "--iters", "2", "--warmup", "0", "--threads", "2"]
        + ["--output-dir", str(tmp_path), "--no-chart", *more]
    )


def test_the_floor_is_the_models_flops_at_the_probes_median_rate(tmp_path, monkeypatch):
    rates = iter([100.0, 300.0, 200.0] * 10)
    monkeypatch.setattr(sb_floor, "conv_rate", lambda dtype: [next(rates)])
    args = _args(tmp_path, "--batch-size", "4")
    [f32, bf16] = sb_floor.measure_floor(args, ["float32", "bfloat16"], rounds=3)
    gflop = sb.forward_cost("resnet18", 32).flops / 1e9
    assert f32.status == bf16.status == "ok"
    assert f32.samples_gflops == [100.0, 200.0, 300.0] and bf16.samples_gflops == [300.0, 100.0, 200.0]
    assert f32.gflops == bf16.gflops == 200.0  # the median of the rounds
    assert f32.gflop_per_image == pytest.approx(gflop)
    assert f32.floor_ms == pytest.approx(gflop * 4 / 200.0 * 1e3)
    assert "1x1 convolution [16, 1024, 14, 14] -> 1024 channels" in f32.probe


def test_a_dtype_whose_probe_fails_is_reported_not_raised(tmp_path, monkeypatch):
    def rate(dtype):
        if dtype == torch.float16:
            raise RuntimeError("no fp16 convolution here\nstack")
        return [50.0]

    monkeypatch.setattr(sb_floor, "conv_rate", rate)
    [f32, f16] = sb_floor.measure_floor(_args(tmp_path), ["float32", "float16"], rounds=2)
    assert f32.status == "ok" and f32.gflops == 50.0
    assert f16.status == "failed" and f16.reason == "RuntimeError: no fp16 convolution here"
    assert f16.floor_ms is None
    [line] = sb_floor.floor_lines([{**f16.__dict__}], [])
    assert line == "Floor (float16): not measured (RuntimeError: no fp16 convolution here)"


def test_the_probe_times_a_real_convolution():
    rates = sb_floor.conv_rate(torch.float32, (1, 64, 32, 8), reps=3)
    assert len(rates) == 3 and all(r > 0 for r in rates)


def test_floor_lines_give_each_contender_as_a_multiple_of_the_floor():
    floors = [{"dtype": "float32", "status": "ok", "gflop_per_image": 8.0, "gflops": 400.0, "floor_ms": 20.0,
               "probe": "probe"}]  # fmt: skip
    results = [
        {"name": "OpenVINO", "kind": "openvino", "dtype": "float32", "median_ms": 22.0},
        {"name": "sepp optimized", "kind": "sepp-optimized", "dtype": "float32", "median_ms": 25.0},
        {"name": "sepp resnet50 (SE overhead)", "kind": "se-overhead", "dtype": "float32", "median_ms": 21.0},
        {"name": "sepp optimized", "kind": "sepp-optimized", "dtype": "bfloat16", "median_ms": 12.0},
        {"name": "timm", "kind": "timm", "dtype": "float32", "median_ms": None},
    ]
    [line] = sb_floor.floor_lines(floors, results)
    assert line == (
        "Floor (float32): 8.00 GFLOP per image at 400 GFLOP/s (a probe) = 20.00 ms; "
        "of the floor: OpenVINO 1.10×, sepp optimized 1.25×"
    )


def test_memory_lines_give_sepp_bench_as_a_multiple_of_openvino():
    memory = [
        {"name": "sepp-bench --optimize (C++)", "dtype": "float32", "status": "ok", "peak_rss_mib": 650.0},
        {"name": "ONNX Runtime (alone, no torch)", "dtype": "float32", "status": "skipped", "peak_rss_mib": None},
        {"name": "OpenVINO (alone, no torch)", "dtype": "float32", "status": "ok", "peak_rss_mib": 325.0},
    ]
    assert sb_memory.memory_lines(memory) == [
        "Peak memory, each alone in its own process (float32): sepp-bench --optimize (C++) 650 MiB, "
        "ONNX Runtime (alone, no torch) skipped, OpenVINO (alone, no torch) 325 MiB; sepp-bench ÷ OpenVINO = 2.00×"
    ]


def test_memory_lines_give_each_sepp_bench_build_as_a_multiple_of_openvino():
    cpu_only = "sepp-bench --optimize (C++, CPU-only torch 2.13.0+cpu)"
    memory = [
        {"name": "sepp-bench --optimize (C++)", "dtype": "float32", "status": "ok", "peak_rss_mib": 650.0},
        {"name": cpu_only, "dtype": "float32", "status": "ok", "peak_rss_mib": 390.0},
        {"name": "OpenVINO (alone, no torch)", "dtype": "float32", "status": "ok", "peak_rss_mib": 325.0},
    ]
    [line] = sb_memory.memory_lines(memory)
    assert line.endswith("; sepp-bench ÷ OpenVINO = 2.00×, with CPU-only torch 2.13.0+cpu 1.20×")
    assert "sepp-bench --optimize (C++, CPU-only torch 2.13.0+cpu) 390 MiB" in line


def test_a_second_sepp_bench_build_is_measured_beside_the_installed_one(tmp_path):
    exe = sb.sepp_bench_executable()
    if exe is None:
        pytest.skip("the sepp-bench executable is not installed with this sepp")
    args = _args(tmp_path, "--memory-iters", "1", "--cpu-sepp-bench", str(exe))
    rows = sb_memory.measure_memory(args, ["float32"], {"sepp-cpp"}, lambda: None, tmp_path)
    assert [m.status for m in rows] == ["ok", "ok"], [m.reason for m in rows]
    installed, second = rows
    assert installed.name == "sepp-bench --optimize (C++)"
    built_against = sepp.build_info()["torch_version"]
    assert second.name == f"sepp-bench --optimize (C++, CPU-only torch {built_against})"
    assert installed.torch_version == second.torch_version == built_against
    assert second.peak_rss_mib > 10 and second.median_ms > 0


def test_a_cpu_sepp_bench_that_is_not_an_executable_is_refused(tmp_path, capsys):
    not_exe = tmp_path / "sepp-bench"
    not_exe.write_text("")
    for path in (str(not_exe), str(tmp_path / "missing")):
        with pytest.raises(SystemExit) as e:
            sb.parse_args(["--cpu-sepp-bench", path])
        assert e.value.code == 2
        assert f"--cpu-sepp-bench: expected an executable file, got {path!r}" in capsys.readouterr().err


def test_a_child_reports_its_own_peak_memory_not_its_parents(tmp_path):
    """Linux carries ru_maxrss over fork and exec, so a child that reported it would show this (deliberately large)
    process's peak. sepp-bench and the runtimes alone must report their own address space's."""
    ballast = bytearray(1536 * 2**20)
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    parent = _vm_hwm_mib()
    assert parent > 1536
    args = _args(tmp_path, "--memory-iters", "1")
    kinds = {"sepp-cpp", "onnxruntime", "openvino"}

    def onnx():
        path = tmp_path / "m.onnx"
        if not path.exists():
            export_onnx(sepp.reference.resnet18().eval(), path, torch.randn(1, 3, 32, 32), dynamo=False)
        return path

    rows = sb_memory.measure_memory(args, ["float32"], kinds, onnx, tmp_path)
    del ballast
    by_name = {m.name: m for m in rows}
    assert set(by_name) == {
        "sepp-bench --optimize (C++)",
        "ONNX Runtime (alone, no torch)",
        "OpenVINO (alone, no torch)",
    }
    for m in rows:
        if m.status == "skipped":
            assert "not installed" in m.reason
            continue
        assert m.status == "ok", m.reason
        assert 10 < m.peak_rss_mib < parent - 1024, (m.name, m.peak_rss_mib, parent)
        assert m.median_ms > 0
    assert by_name["sepp-bench --optimize (C++)"].status == "ok"


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="needs onnxruntime")
def test_a_runtime_alone_runs_without_torch(tmp_path):
    path = tmp_path / "m.onnx"
    export_onnx(sepp.reference.resnet18().eval(), path, torch.randn(1, 3, 32, 32), dynamo=False)
    script = Path(sb_memory.__file__).with_name("_alone.py")
    p = subprocess.run(
        [sys.executable, str(script), "onnxruntime", str(path), "--iters", "2"], capture_output=True, text=True
    )
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["runtime"] == "onnxruntime" and report["torch_loaded"] is False
    assert report["peak_rss_mib"] > 0 and report["median_ms"] > 0
    p = subprocess.run(
        [sys.executable, str(script), "onnxruntime", str(path), "--dtype", "bfloat16"], capture_output=True, text=True
    )
    assert p.returncode != 0 and "runs float32 only, got --dtype bfloat16" in p.stderr


def test_the_child_is_started_only_once_this_process_is_idle():
    stop = time.perf_counter() + 0.4

    def spin():
        while time.perf_counter() < stop:
            pass

    t = threading.Thread(target=spin)
    t.start()
    sb_runners.wait_until_idle(limit_s=30.0)
    assert time.perf_counter() >= stop  # it returned only after the spinning thread had ended
    t.join()
    assert sb_runners.wait_until_idle(limit_s=30.0) < 30.0  # and, with nothing running, before its limit


def test_the_comparison_reports_the_floor_and_the_memory(tmp_path, capsys):
    argv = ["--model", "resnet18", "--image-size", "32", "--iters", "2", "--rounds", "2", "--warmup", "0"]
    argv += ["--dtypes", "float32", "--threads", "2", "--contenders", "sepp-optimized,sepp-cpp,openvino"]
    argv += ["--memory-iters", "1", "--output-dir", str(tmp_path)]
    assert sb.main(argv) == 0
    out = capsys.readouterr().out
    [path] = tmp_path.glob("*_resnet18_b1.json")
    report = json.loads(path.read_text())
    if torch.cuda.is_available():
        assert report["floor"] == [] and report["memory"] == []
        return
    [floor] = report["floor"]
    assert floor["status"] == "ok" and floor["dtype"] == "float32" and len(floor["samples_gflops"]) == 10
    assert floor["floor_ms"] == pytest.approx(floor["gflop_per_image"] / floor["gflops"] * 1e3)
    assert f"Floor (float32): {floor['gflop_per_image']:.2f} GFLOP per image" in out
    names = [m["name"] for m in report["memory"]]
    assert names == ["sepp-bench --optimize (C++)", "OpenVINO (alone, no torch)"]  # ONNX Runtime was not selected
    assert report["memory"][0]["status"] == "ok" and report["memory"][0]["peak_rss_mib"] > 0
    assert "Peak memory, each alone in its own process (float32): sepp-bench --optimize (C++)" in out
    assert (tmp_path / path.name.replace(".json", ".png")).read_bytes()[:4] == b"\x89PNG"
    assert sb.main(argv + ["--no-floor", "--no-memory"]) == 0
    report = json.loads(path.read_text())
    assert report["floor"] == [] and report["memory"] == []


def test_memory_iters_must_be_positive(capsys):
    with pytest.raises(SystemExit) as e:
        sb.parse_args(["--memory-iters", "0"])
    assert e.value.code == 2 and "--memory-iters: expected an integer >= 1, got 0" in capsys.readouterr().err
