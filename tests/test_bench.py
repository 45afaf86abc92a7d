"""The comparison's interfaces (python -m sepp.bench): arguments, JSON schema, output check, training steps, SE
kernel costs and chart. Nothing here asserts a timing; sepp-bench, the C++ executable, is tests/test_sepp_bench.py."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import torch

import sepp
import sepp.bench as sb
import sepp.bench.kernels as sb_kernels

# ------------------------------------------------------------------------------------------------- the comparison


@pytest.mark.parametrize(
    "argv, expect",
    [
        (["--model", "seresnet51"], "--model: unknown model 'seresnet51'"),
        (["--batch-size", "0"], "--batch-size: expected an integer >= 1, got 0"),
        (["--image-size", "8"], "--image-size: expected an integer >= 32, got 8"),
        (
            ["--dtypes", "float32,int8"],
            "--dtypes: expected a comma list of float32, bfloat16, float16, got float32,int8",
        ),
        (["--contenders", "tensorrt"], "--contenders: expected a comma list of sepp,"),
        (["--skip", "foo"], "--skip: expected a comma list of"),
        (["--rounds", "0"], "--rounds: expected an integer >= 1, got 0"),
        (["--device", "npu"], "--device: invalid choice: 'npu'"),
    ],
)
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


RESULT_KEYS = {
    "name",
    "kind",
    "model",
    "dtype",
    "layout",
    "status",
    "reason",
    "note",
    "setup_s",
    "times_ms",
    "median_ms",
    "p90_ms",
    "images_per_s",
    "ratio_to_sepp",
    "max_abs_diff",
    "rel_diff",
    "baseline",
    "compare_to",
}


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
    argv = [
        "--model",
        "se_resnet50",
        "--image-size",
        "32",
        "--batch-size",
        "2",
        "--iters",
        "4",
        "--rounds",
        "2",
        "--warmup",
        "1",
        "--dtypes",
        "float32",
        "--threads",
        "2",
        "--output-dir",
        str(tmp_path),
        "--no-memory",  # test_bench_floor_memory.py runs it
    ]
    assert sb.main(argv) == 0
    out = capsys.readouterr().out
    assert "| contender | dtype | layout | median ms | p90 ms | img/s | ratio to sepp | max abs diff | status |" in out
    assert "SE overhead (sepp, float32): se_resnet50" in out
    assert "SE overhead (sepp optimized, float32): se_resnet50" in out
    [path] = (
        tmp_path.glob("*_cpu_se_resnet50_b2.json")
        if not torch.cuda.is_available()
        else tmp_path.glob("*_cuda_se_resnet50_b2.json")
    )
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
    args = sb.parse_args(
        [
            "--model",
            "se_resnet18",
            "--image-size",
            "32",
            "--iters",
            "2",
            "--warmup",
            "0",
            "--dtypes",
            "float32",
            "--contenders",
            "sepp",
            "--output-dir",
            str(tmp_path),
            "--no-chart",
        ]
    )
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

    extra = [
        sb.Contender("wrong weights", "sepp", "float32", "nchw", wrong, model="se_resnet18"),
        sb.Contender("broken", "sepp", "float32", "nchw", broken, model="se_resnet18"),
        sb.Contender("zeros", "sepp", "float32", "nchw", zeros, model="se_resnet18"),
    ]
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
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "sepp.bench",
            "--model",
            "resnet18",
            "--image-size",
            "32",
            "--iters",
            "1",
            "--warmup",
            "0",
            "--dtypes",
            "float32",
            "--contenders",
            "sepp,reference",
            "--output-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    assert "| sepp.reference eager | float32 | nchw |" in p.stdout
    assert len(list(tmp_path.glob("*.json"))) == 1 and len(list(tmp_path.glob("*.png"))) == 1
    p = subprocess.run([sys.executable, "-m", "sepp.bench", "--model", "nope"], capture_output=True, text=True)
    assert p.returncode == 2 and "--model: unknown model 'nope'" in p.stderr


# ------------------------------------------------------------------------------------------- training steps


def test_compare_train_steps_end_to_end(tmp_path, capsys):
    """--train: sepp's and timm's training steps on a small input; each one's loss of one step agrees with sepp's
    float32 loss, and the timm row's ratio is to sepp's train row, the inference row's to sepp's inference row.
    (64×64, not 32×32: at 32×32 the last stage's train-mode BN normalises over 2 values per channel, which magnifies
    float32 rounding to ~1% of the loss.)"""
    argv = [
        "--model",
        "se_resnet50",
        "--image-size",
        "64",
        "--batch-size",
        "2",
        "--iters",
        "1",
        "--rounds",
        "1",
        "--warmup",
        "0",
        "--dtypes",
        "float32",
        "--threads",
        "2",
        "--train",
        "--contenders",
        "sepp,train-sepp,train-timm",
        "--skip",
        "sepp",
        "--output-dir",
        str(tmp_path),
        "--no-chart",
    ]
    assert sb.main(argv) == 0
    out = capsys.readouterr().out
    assert "| train step sepp | float32 | channels_last |" in out
    [path] = tmp_path.glob("*_se_resnet50_b2.json")
    report = json.loads(path.read_text())
    _check_report(report, "se_resnet50")
    assert report["settings"]["train"] is True and report["train"]["sepp_float32_loss"] > 0
    rows = {(r["kind"], r["dtype"]): r for r in report["results"]}
    assert set(rows) == {("train-sepp", "float32"), ("train-timm", "float32")}
    for dtype in ("float32",):
        mine = rows[("train-sepp", dtype)]
        assert mine["status"] == "ok" and mine["ratio_to_sepp"] == pytest.approx(1.0), mine
        assert mine["images_per_s"] == pytest.approx(2e3 / mine["median_ms"]) and len(mine["times_ms"]) == 1
        assert "loss" in mine["note"]
        theirs = rows[("train-timm", dtype)]
        if importlib.util.find_spec("timm") is None:
            assert theirs["status"] == "skipped"
            continue
        assert theirs["status"] == "ok", theirs
        assert theirs["rel_diff"] <= sb.TOLERANCE[dtype]
        assert theirs["ratio_to_sepp"] == pytest.approx(theirs["median_ms"] / mine["median_ms"])


def test_train_ratios_are_to_the_sepp_train_step():
    rows = [
        sb.Result("sepp", "sepp", "m", "float32", "nchw", "ok", median_ms=1.0, baseline=True),
        sb.Result("timm", "timm", "m", "float32", "nchw", "ok", median_ms=3.0),
        sb.Result("train sepp", "train-sepp", "m", "float32", "channels_last", "ok", median_ms=10.0, baseline=True),
        sb.Result("train timm", "train-timm", "m", "float32", "channels_last", "ok", median_ms=12.0),
        sb.Result("train sepp", "train-sepp", "m", "bfloat16", "channels_last", "ok", median_ms=5.0, baseline=True),
        sb.Result("train timm", "train-timm", "m", "bfloat16", "channels_last", "ok", median_ms=4.0),
    ]
    sb.add_ratios(rows)
    assert [r.ratio_to_sepp for r in rows] == pytest.approx([1.0, 3.0, 1.0, 1.2, 1.0, 0.8])


def test_compare_train_flags_a_wrong_loss_and_survives_a_broken_step(tmp_path):
    """Also the autocast step (bf16, emulated where the CPU lacks it): its loss agrees with float32's."""
    args = sb.parse_args(
        [
            "--model",
            "se_resnet18",
            "--image-size",
            "64",
            "--batch-size",
            "2",
            "--iters",
            "1",
            "--rounds",
            "1",
            "--warmup",
            "0",
            "--dtypes",
            "float32,bfloat16",
            "--train",
            "--contenders",
            "train-sepp",
            "--output-dir",
            str(tmp_path),
            "--no-chart",
        ]
    )
    steps = []

    def wrong():
        def step():
            steps.append(1)
            return torch.tensor(1.0)

        return step, 123.0  # a loss that no step from the shared weights gives

    def broken():
        raise RuntimeError("backward exploded\nmore")

    extra = [
        sb.Contender("wrong loss", "train-sepp", "float32", "channels_last", wrong, model="se_resnet18"),
        sb.Contender("broken step", "train-timm", "float32", "channels_last", broken, model="se_resnet18"),
    ]
    report = sb.run(args, [], extra)
    _check_report(report, "se_resnet18")
    r = {x["name"]: x for x in report["results"]}
    assert r["train step sepp"]["status"] == "ok" and r["train step sepp (autocast)"]["status"] == "ok"
    assert r["train step sepp (autocast)"]["dtype"] == "bfloat16" and r["train step sepp (autocast)"]["rel_diff"] > 0
    assert r["wrong loss"]["status"] == "mismatch" and "loss of one step 123" in r["wrong loss"]["reason"]
    assert steps == []  # checked, never timed
    assert r["broken step"]["status"] == "failed" and r["broken step"]["reason"] == "RuntimeError: backward exploded"


def test_compare_train_kinds_need_train(capsys):
    with pytest.raises(SystemExit) as e:
        sb.parse_args(["--contenders", "sepp,train-timm"])
    assert e.value.code == 2 and "--contenders: train-timm run only with --train" in capsys.readouterr().err
    assert sb.parse_args(["--train", "--contenders", "train-sepp"]).contenders == ["train-sepp"]
    assert set(sb.parse_args([]).contenders) == set(sb.ALL_KINDS)


# ------------------------------------------------------------------------------------------------ SE kernels


def test_se_kernel_costs_by_hand():
    """Bytes and FLOPs of the three operators at se_resnet50's first SE block, batch 2, bf16 (2 bytes an element):
    x [2, 256, 56, 56], rd = 256 / 16 = 16, FC biases."""
    costs = sb.se_kernel_costs("se_resnet50", batch_size=2, dtype="bfloat16")
    first = {k.op: k for k in costs if k.block == "layer1.0.se"}
    nchw, nc = 2 * 256 * 56 * 56, 2 * 256  # 1,605,632 and 512
    assert first["se_squeeze"].shape == [2, 256, 56, 56] and first["se_squeeze"].rd == 16
    assert (first["se_squeeze"].bytes, first["se_squeeze"].flops) == (2 * (nchw + nc), nchw) == (3212288, 1605632)
    # z [2, 256] + w1 [16, 256] + b1 [16] + w2 [256, 16] + b2 [256] + out [2, 256]
    assert (
        (first["se_excite"].bytes, first["se_excite"].flops)
        == (2 * (512 + 4096 + 16 + 4096 + 256 + 512), 4 * 2 * 256 * 16)
        == (18976, 32768)
    )
    # x + identity + out, and s [2, 256]
    assert (first["se_scale"].bytes, first["se_scale"].flops) == (2 * (3 * nchw + nc), 3 * nchw) == (9634816, 4816896)
    assert sb.kernel_costs(sb.SEShape("b", [2, 256, 56, 56], 16, False), "float32")[1].bytes == 4 * (
        512 + 4096 + 4096 + 512
    )  # no biases, 4 bytes an element


def test_se_blocks_follow_the_model():
    """se_resnet50 at 224×224: 16 SE blocks (3, 4, 6, 3) on the four stage shapes, bottlenecks C / 16."""
    blocks = sb.se_blocks("se_resnet50", image_size=224, batch_size=8)
    assert [b.block for b in blocks][:4] == ["layer1.0.se", "layer1.1.se", "layer1.2.se", "layer2.0.se"]
    shapes = {}
    for b in blocks:
        shapes.setdefault(tuple(b.shape), []).append(b.rd)
    assert shapes == {
        (8, 256, 56, 56): [16] * 3,
        (8, 512, 28, 28): [32] * 4,
        (8, 1024, 14, 14): [64] * 6,
        (8, 2048, 7, 7): [128] * 3,
    }
    assert len(sb.se_kernel_costs("se_resnet50", 8, "float32")) == 3 * 16
    assert sb.se_blocks("resnet50") == []
    assert [b.rd for b in sb.se_blocks("se_resnet18", rd_divisor=8)][:2] == [8, 8]  # timm's widths: 64/16 -> 8


def test_forward_flops_known_values():
    """Known counts (multiply-adds of convolutions and linear layers, per image at 224×224): torchvision lists
    ResNet-50 (stride on the 3×3, as timm and sepp) at 4.09 GMAC; SE adds ~2.5 M; the SENet paper (Table 2) gives
    3.86 / 3.87 GMAC for ResNet-50 / SE-ResNet-50 with the stride on the first 1×1 (original Caffe)."""
    se50 = sb.forward_cost("se_resnet50")
    assert se50.macs == pytest.approx(4.1e9, rel=0.03) and se50.flops == 2 * se50.macs
    assert se50.se_blocks == 16
    assert sb.forward_cost("resnet50").macs == pytest.approx(4.09e9, rel=0.01)
    assert 2e6 < se50.macs - sb.forward_cost("resnet50").macs < 3e6
    assert sb.forward_cost("se_resnet50", stride_in_1x1=True).macs == pytest.approx(3.87e9, rel=0.01)
    assert sb.forward_cost("se_resnet50", image_size=448).macs == pytest.approx(4 * se50.macs, rel=0.01)


def _kernel_argv(tmp_path, *more):
    # "--contenders sepp --skip sepp": no comparison rows, only the kernels
    return [
        "--model",
        "se_resnet50",
        "--image-size",
        "64",
        "--batch-size",
        "2",
        "--iters",
        "2",
        "--rounds",
        "2",
        "--warmup",
        "0",
        "--dtypes",
        "float32",
        "--threads",
        "2",
        "--contenders",
        "sepp",
        "--skip",
        "sepp",
        "--kernels",
        "--output-dir",
        str(tmp_path),
        "--no-chart",
        *more,
    ]


def _check_kernels(k: dict, batch: int, image: int) -> None:
    assert k["bandwidth"]["gb_per_s"] > 0 and k["bandwidth"]["moved_bytes"] == 2 * k["bandwidth"]["bytes"]
    assert k["forward"]["model"] == "se_resnet50" and k["forward"]["flops"] == 2 * k["forward"]["macs"] > 0
    s = image // 4
    assert {tuple(r["shape"]) for r in k["results"]} == {
        (batch, 256, s, s),
        (batch, 512, s // 2, s // 2),
        (batch, 1024, s // 4, s // 4),
        (batch, 2048, s // 8, s // 8),
    }
    assert sorted(len(r["blocks"]) for r in k["results"] if r["op"] == "se_scale") == [3, 3, 4, 6]
    for r in k["results"]:
        assert r["bytes"] > 0 and r["flops"] > 0 and r["layout"] == "channels_last"
        if r["status"] == "ok":
            assert r["median_ms"] > 0 and r["gb_per_s"] > 0 and r["floor_ms"] > 0 and r["reps"] >= 1
            assert r["gb_per_s"] == pytest.approx(r["bytes"] / r["median_ms"] / 1e6)
            assert r["fraction_of_copy"] == pytest.approx(r["gb_per_s"] / k["bandwidth"]["gb_per_s"])
            assert r["rel_diff"] <= sb.TOLERANCE[r["dtype"]]
        else:
            assert r["reason"] and r["median_ms"] is None


def test_compare_kernels(tmp_path, capsys):
    """--kernels: the "kernels" section, with each of the three SE operators (all registered by this build) checked
    and timed at the four stage shapes."""
    assert sb.main(_kernel_argv(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "| op | shape | dtype | blocks | MB | MFLOP | median µs | GB/s | of copy | floor µs | status |" in out
    assert "GB/s (read + write)" in out and "GFLOP per image" in out
    [path] = tmp_path.glob("*_se_resnet50_b2.json")
    report = json.loads(path.read_text())
    assert report["schema"] == sb.SCHEMA and report["results"] == [] and report["settings"]["kernels"] is True
    k = report["kernels"]
    _check_kernels(k, batch=2, image=64)
    assert {r["op"] for r in k["results"]} == set(sb.KERNEL_OPS)
    for op in sb.KERNEL_OPS:
        assert sb.sepp_op(op) is not None, f"torch.ops.sepp.{op} is not registered"
        rows = [r for r in k["results"] if r["op"] == op]
        assert len(rows) == 4 and all(r["status"] == "ok" for r in rows), rows
    assert [f["ops"] for f in k["per_forward"]] == [list(sb.KERNEL_OPS)]


def test_compare_kernels_checks_each_operator(tmp_path, monkeypatch):
    """An operator the extension lacks is skipped, a wrong one is a mismatch and a broken one a failure, none of them
    timed; the others are still timed. (The kernels look operators up through sepp.bench.kernels.sepp_op.)"""
    real = sb_kernels.sepp_op
    monkeypatch.setattr(sb_kernels, "sepp_op", lambda name: None if name == "se_squeeze" else real(name))
    k = sb.run(sb.parse_args(_kernel_argv(tmp_path)), [])["kernels"]
    _check_kernels(k, batch=2, image=64)
    assert {(r["op"], r["status"]) for r in k["results"]} == {
        ("se_squeeze", "skipped"),
        ("se_excite", "ok"),
        ("se_scale", "ok"),
    }
    assert all("torch.ops.sepp has no se_squeeze" in r["reason"] for r in k["results"] if r["op"] == "se_squeeze")
    assert [f["ops"] for f in k["per_forward"]] == [["se_excite", "se_scale"]]

    def broken(*a):
        raise RuntimeError("no kernel for this\nmore")

    swap = {"se_squeeze": lambda x, dtype=None: x.sum((2, 3)), "se_excite": broken}
    monkeypatch.setattr(sb_kernels, "sepp_op", lambda name: swap.get(name) or real(name))
    k = sb.run(sb.parse_args(_kernel_argv(tmp_path)), [])["kernels"]
    _check_kernels(k, batch=2, image=64)
    by_op = {}
    for r in k["results"]:
        by_op.setdefault(r["op"], set()).add((r["status"], r["reason"].split(" by ")[0]))
    assert by_op == {
        "se_squeeze": {("mismatch", "output differs from plain torch")},
        "se_excite": {("failed", "RuntimeError: no kernel for this")},
        "se_scale": {("ok", "")},
    }
