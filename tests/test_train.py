"""Training: the C++-backed models under DistributedDataParallel (gloo, 2 processes), autocast, activation
checkpointing, an EMA and torch.compile; and ``python -m sepp.train`` end to end (one process and torchrun), exact
resumes (also on another number of processes), a crash mid-checkpoint, and bad input. CPU only, loopback only."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import rel_err
from PIL import Image
from safetensors.torch import load_file

import sepp
from sepp import train as T

TINY = dict(block="basic", layers=(1, 1, 1, 1), num_classes=5, se=True)
# Subprocesses: the same sepp as this process, one thread each, gloo on the loopback interface only.
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
    "OMP_NUM_THREADS": "1",
    "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo"),
}


def python(*args, **kwargs):
    """Starts ``python ARGS`` with the same sepp as this process."""
    return subprocess.Popen(
        [sys.executable, *map(str, args)], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
    )


def finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# ---------------------------------------------------------------------------------------------------- DDP
DDP_SCRIPT = textwrap.dedent("""
    import sys, torch, torch.nn.functional as F, torch.distributed as dist
    from safetensors.torch import save_file
    import sepp
    torch.set_num_threads(1)
    rank, world, init, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    torch.manual_seed(100 + rank)  # rank 1 starts from other values: DDP must broadcast rank 0's
    model = sepp.ResNet(block="basic", layers=(1, 1, 1, 1), num_classes=5, se=True, zero_init_last=False).eval()
    with torch.no_grad():
        for name, b in model.named_buffers():
            if b.is_floating_point():
                b.add_(0.1 * (rank + 1))  # BN in eval mode, with running statistics that differ per rank
    net = model
    if world > 1:
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
        net = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    for step in range(3):
        g = torch.Generator().manual_seed(7 + step)
        x, y = torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 5, (8,), generator=g)
        share = slice(rank * 8 // world, (rank + 1) * 8 // world)  # this rank's half of the global batch
        opt.zero_grad()
        F.cross_entropy(net(x[share]), y[share]).backward()
        opt.step()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out)
""")


def test_ddp_two_gloo_processes_equal_one_process_on_the_concatenated_batches(tmp_path):
    init = f"file://{tmp_path / 'rendezvous'}"
    procs = [python("-c", DDP_SCRIPT, rank, 2, init, tmp_path / f"rank{rank}.safetensors") for rank in (0, 1)]
    procs.append(python("-c", DDP_SCRIPT, 0, 1, "-", tmp_path / "single.safetensors"))
    for p in procs:
        done = finish(p)
        assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1, single = (load_file(str(tmp_path / f"{n}.safetensors")) for n in ("rank0", "rank1", "single"))
    assert rank0.keys() == rank1.keys() == single.keys()
    for k in rank0:
        assert torch.equal(rank0[k], rank1[k]), k  # parameters and buffers identical on both ranks
        assert rel_err(rank0[k], single[k]) <= 1e-6, (k, rel_err(rank0[k], single[k]))


# ---------------------------------------------------------------------------------------------------- the modules
@pytest.fixture
def tiny():
    return sepp.ResNet(**TINY, zero_init_last=False)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_autocast_forward_and_backward(tiny, dtype):
    # Batch 16: the model is in training mode, and batch statistics over 4 images amplify the rounding (a max error
    # of 0.11 in 200 seeds); over 16 they do not.
    x = torch.randn(16, 3, 32, 32)
    reference = tiny(x)
    with torch.autocast("cpu", dtype=dtype):
        y = tiny(x)
    assert y.dtype == dtype
    y.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in tiny.parameters())
    # Rounding to 8 mantissa bits at every operator: over 200 seeds, bf16 gave 0.012 to 0.035 of the largest logit
    # (fp16 0.0014 to 0.0059); a wrong operator gives errors of order 1.
    assert rel_err(y.float(), reference) < 1e-1


def test_activation_checkpointing_gives_the_plain_gradients(tiny):
    import copy

    plain, ckpt = tiny, T.CheckpointedStages(copy.deepcopy(tiny))
    x = torch.randn(4, 3, 32, 32)
    y1, y2 = plain(x), ckpt(x)
    assert torch.equal(y1, y2)
    (y1**2).sum().backward()
    (y2**2).sum().backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.model.parameters()):
        assert p.grad is not None and q.grad is not None, name
        assert rel_err(q.grad, p.grad) <= 1e-6, name


def test_ema_is_a_separate_copy_that_follows_the_weights(tiny):
    ema = T.ModelEma(tiny, decay=0.75)
    assert not ema.module.training and not any(p.requires_grad for p in ema.module.parameters())
    assert all(e.data_ptr() != p.data_ptr() for e, p in zip(ema.module.parameters(), tiny.parameters()))
    start = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in tiny.parameters():
            p.add_(1.0)
        tiny.bn1.num_batches_tracked.fill_(5)
    ema.update()
    for k, v in ema.module.state_dict().items():
        now = tiny.state_dict()[k]
        expected = start[k] + 0.25 * (now - start[k]) if v.is_floating_point() else now
        torch.testing.assert_close(v, expected, rtol=1e-6, atol=1e-6, msg=k)
    x = torch.randn(2, 3, 32, 32)
    assert ema.module(x).shape == (2, 5)  # the C++ clone runs on its own weights


def test_torch_compile_runs_forward_and_backward(tiny):
    import copy

    # float64: training-mode BN over the few values of layer4 (2x2, batch 2) amplifies rounding, so in float32 the
    # compiled graph's other operator order moved gradients by 1e-5 typically and by 3e-2 once in 12 seeds.
    tiny.double()
    eager = copy.deepcopy(tiny)
    compiled = torch.compile(tiny)
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    y = compiled(x)
    y.sum().backward()
    eager(x).sum().backward()
    for p, q in zip(tiny.parameters(), eager.parameters()):
        assert rel_err(p.grad, q.grad) <= 1e-10  # 3.6e-14 at worst over 8 seeds


def test_convert_sync_batchnorm_cannot_reach_the_cpp_batchnorm(tiny):
    # BN stays per process, and says so: SyncBatchNorm's converter finds no Python BN module to replace and fails
    # when it re-attaches the (C++) children; the command refuses --sync-bn.
    with pytest.raises(TypeError, match="cannot add a submodule from Python to a C\\+\\+ module"):
        torch.nn.SyncBatchNorm.convert_sync_batchnorm(tiny)
    with pytest.raises(T.TrainError, match="--sync-bn: .*stay per process"):
        T.train(T.Config(data="unused", sync_bn=True))


# ---------------------------------------------------------------------------------------------------- library pieces
def test_global_batches_are_the_same_images_on_any_number_of_processes():
    def steps(world, accum, batch, start=0):
        shares = [
            list(T.GlobalBatchSampler(50, batch, world, r, accum, seed=1, epoch=2, start=start)) for r in range(world)
        ]
        per_micro = [[s[i : i + batch] for i in range(0, len(s), batch)] for s in shares]
        # global batch of step k: micro-batch a of every rank, in order (a, rank)
        n_micro = len(per_micro[0])
        return [
            sum((per_micro[r][m] for m in range(k, k + accum) for r in range(world)), [])
            for k in range(0, n_micro, accum)
        ]

    two_procs, one_proc_accum = steps(world=2, accum=1, batch=4), steps(world=1, accum=2, batch=4)
    assert two_procs == one_proc_accum and len(two_procs) == 50 // 8
    assert len(set(sum(two_procs, []))) == 48  # no image twice in an epoch
    assert steps(world=1, accum=1, batch=8, start=16) == two_procs[2:]  # a resume skips what was consumed
    other_epoch = list(T.GlobalBatchSampler(50, 8, 1, 0, 1, seed=1, epoch=3))
    assert other_epoch != sum(two_procs, [])


def test_learning_rate_schedules():
    c = T.Config(data="", epochs=10, warmup_epochs=2, schedule="cosine")
    assert T.learning_rate(c, 1.0, 0.0, 0.5) == pytest.approx(0.25)  # warm-up, reached at the step's end
    assert T.learning_rate(c, 1.0, 2.0, 2.5) == pytest.approx(1.0)
    assert T.learning_rate(c, 1.0, 6.0, 6.5) == pytest.approx(0.5)
    assert T.learning_rate(c, 1.0, 10.0, 10.5) == pytest.approx(0.0)
    s = T.Config(data="", epochs=100, warmup_epochs=0, schedule="step", step_epochs=30, gamma=0.1)
    assert [T.learning_rate(s, 0.6, t, t + 0.01) for t in (0, 29.9, 30, 60, 95)] == pytest.approx(
        [0.6, 0.6, 0.06, 0.006, 0.0006]
    )


def test_checkpoints_are_folders_with_a_latest_pointer(tmp_path, tiny):
    root = tmp_path / "checkpoints"
    stale = root / ".tmp-step-00000001-dead"  # what a writer killed mid-save leaves
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"partial")
    for step in (1, 2, 3):
        T.save_checkpoint(root, step, tiny, None, {"format": T.CHECKPOINT_FORMAT, "step": step}, keep=2)
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-00000002", "step-00000003"]
    assert (root / "latest").read_text() == "step-00000003\n"
    umask = os.umask(0)
    os.umask(umask)
    assert (root / "step-00000003").stat().st_mode & 0o777 == 0o777 & ~umask
    assert all(p.stat().st_mode & 0o777 == 0o666 & ~umask for p in [root / "latest", *root.glob("step-*/*")])
    assert T.resolve_checkpoint(str(tmp_path)) == T.resolve_checkpoint(str(root)) == root / "step-00000003"
    assert torch.load(root / "step-00000003" / "state.pt", weights_only=True)["step"] == 3
    # a run resumed from step 1 saves step 2 again: beside the first, and the later one stays
    T.save_checkpoint(root, 2, tiny, None, {"format": T.CHECKPOINT_FORMAT, "step": 2, "again": True}, keep=2)
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-00000002", "step-00000002.1", "step-00000003"]
    assert T.resolve_checkpoint(str(root)) == root / "step-00000002.1"
    assert torch.load(root / "step-00000002.1" / "state.pt", weights_only=True)["again"]


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_checkpoint_state_is_never_unpickled(tmp_path, tiny, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "step-00000001"
    folder.mkdir()
    sepp.save_weights(tiny, folder / "model.safetensors")
    torch.save({"format": T.CHECKPOINT_FORMAT, "payload": _Evil()}, folder / "state.pt")
    with pytest.raises(T.TrainError, match="not a readable checkpoint state"):
        T.load_checkpoint(folder)
    assert not (tmp_path / "pwned").exists()


# ---------------------------------------------------------------------------------------------------- the command
def make_image_folder(root: Path, train_per_class=32, val_per_class=8, size=32, seed=0):
    """Three classes told apart by their dominant colour: red, green, blue, with noise."""
    g = torch.Generator().manual_seed(seed)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for c, name in enumerate(("red", "green", "blue")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                image = torch.rand(3, size, size, generator=g) * 0.5
                image[c] += 0.5
                Image.fromarray((image * 255).byte().permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("toy"))


def cli_args(data, output, *extra):
    # 96 training images, a global batch of 8: 12 steps in the epoch
    return [
        "--data",
        data,
        "--output",
        output,
        "--model",
        "se_resnet18",
        "--epochs",
        "1",
        "--image-size",
        "32",
        "--batch-size",
        "8",
        "--lr",
        "0.02",
        "--warmup-epochs",
        "0.1",
        "--workers",
        "0",
        "--log-every",
        "1",
        "--seed",
        "3",
        *extra,
    ]


def cli(data, output, *extra, nproc=1, script=None):
    """Starts ``python -m sepp.train`` (under torchrun with nproc > 1), or ``python -c script`` with its arguments."""
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", nproc] if nproc > 1 else []
    command = ["-c", script] if script else [*launcher, "-m", "sepp.train"]
    return python(*command, *cli_args(data, output, *extra))


# the single-process runs share these flags, so that one is the other's exact continuation
SINGLE = ("--ema", "0.9", "--label-smoothing", "0.1", "--channels-last")


@pytest.fixture(scope="module")
def runs(toy_data, tmp_path_factory):
    """Three runs of the command, side by side: one epoch on one process (a checkpoint every 4 steps), the same
    stopped after 2 steps, and one epoch on 2 processes under torchrun (a checkpoint every 2 steps)."""
    root = tmp_path_factory.mktemp("runs")
    started = {
        "epoch": cli(toy_data, root / "epoch", *SINGLE, "--save-every", "4", "--keep", "0", "--workers", "2"),
        "two_steps": cli(toy_data, root / "two_steps", *SINGLE, "--max-steps", "2", "--no-progress"),
        "torchrun": cli(
            toy_data,
            root / "torchrun",
            "--batch-size",
            "4",
            "--save-every",
            "2",
            "--keep",
            "0",
            "--activation-checkpointing",
            "--no-progress",
            nproc=2,
        ),
    }
    done = {name: finish(p) for name, p in started.items()}
    return {name: (root / name, d) for name, d in done.items()}


def losses(run: Path):
    with (run / "steps.csv").open() as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def step_dir(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step-{step:08d}"


def check_one_epoch(run: Path, done, world: int):
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == world and summary["global_batch"] == 8 and summary["step"] == 12
    assert summary["epoch"] == 1 and summary["val_top5"] == 100  # 3 classes
    assert summary["val_top1"] >= 75, summary  # it tells the colours apart (chance: 33%; one epoch gives 79-100%)
    with (run / "epochs.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 1
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-00000012"
    loss = losses(run)
    assert len(loss) == 12
    assert sum(loss[-4:]) / 4 < 0.5 * sum(loss[:4]) / 4, loss  # it learns the colours
    assert "epoch 1/1: train loss" in done.stderr


def test_cli_one_epoch_on_one_process(runs):
    run, done = runs["epoch"]
    check_one_epoch(run, done, world=1)
    assert "12/12" in done.stderr and "img_s=" in done.stderr  # the progress bar
    assert (step_dir(run, 12) / "ema.safetensors").is_file()


def test_cli_one_epoch_under_torchrun_with_two_processes(runs):
    run, done = runs["torchrun"]
    check_one_epoch(run, done, world=2)
    assert "BatchNorm statistics are per process" in done.stderr


def test_resume_continues_exactly(runs, toy_data, tmp_path):
    """2 steps, then a new process resumes for 2 more: the same weights, EMA, momentum and losses as 4 steps in one
    go (that run also read its data with 2 loader processes, these with none)."""
    reference, _ = runs["epoch"]
    two_steps, done = runs["two_steps"]
    assert done.returncode == 0, done.stderr[-3000:]
    run = shutil.copytree(two_steps, tmp_path / "resumed")
    done = finish(cli(toy_data, run, *SINGLE, "--resume", run, "--max-steps", "4", "--no-progress"))
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(str(step_dir(run, 4) / name)), load_file(str(step_dir(reference, 4) / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    a, b = (torch.load(step_dir(r, 4) / "state.pt", weights_only=True) for r in (run, reference))
    assert (a["epoch"], a["epoch_samples"], a["step"]) == (b["epoch"], b["epoch_samples"], b["step"]) == (0, 32, 4)
    for i, s in a["optimizer"]["state"].items():
        assert torch.equal(s["momentum_buffer"], b["optimizer"]["state"][i]["momentum_buffer"])
    assert losses(run) == losses(reference)[:4]  # the log continues too, without the steps after the checkpoint


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_cli_with_autocast(runs, toy_data, tmp_path, amp):
    """--amp runs the C++ forward under torch.autocast (fp16 with a gradient scaler); the weights stay float32. The
    run has the flags and seed of the float32 run "epoch", so its first step is the same weights on the same images:
    its loss differs from that run's by the rounding of the autocast dtype alone."""
    reference, _ = runs["epoch"]
    run = tmp_path / amp
    done = finish(cli(toy_data, run, *SINGLE, "--amp", amp, "--max-steps", "4", "--no-progress"))
    assert done.returncode == 0, done.stderr[-3000:]
    loss, float32 = losses(run), losses(reference)[:4]
    assert len(loss) == 4 and all(math.isfinite(v) for v in loss)
    assert loss[0] != float32[0] and abs(loss[0] - float32[0]) <= 0.01 * float32[0], (loss, float32)
    weights = load_file(str(step_dir(run, 4) / "model.safetensors"))
    assert all(t.dtype == torch.float32 for k, t in weights.items() if "running" in k or k.endswith("weight"))
    scaler = torch.load(step_dir(run, 4) / "state.pt", weights_only=True)["scaler"]
    assert bool(scaler) == (amp == "fp16")  # a disabled GradScaler's state is empty


def test_checkpoint_of_two_processes_resumes_on_one(runs, toy_data, tmp_path):
    """torchrun's step-2 checkpoint (2 processes x 4 images) continues on 1 process x 4 images x 2 accumulation
    steps, the same global batches: after step 4 the weights are torchrun's own step 4, up to float summation order
    (BN normalises the same 4 images either way; DDP's mean of two gradients and the sum of two halves are the same
    numbers)."""
    source, done = runs["torchrun"]
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "one_process"
    done = finish(
        cli(
            toy_data,
            run,
            "--batch-size",
            "4",
            "--accum-steps",
            "2",
            "--no-progress",
            "--resume",
            step_dir(source, 2),
            "--max-steps",
            "4",
        )
    )
    assert done.returncode == 0, done.stderr[-3000:]
    state = torch.load(step_dir(run, 4) / "state.pt", weights_only=True)
    assert (state["world_size"], state["global_batch"], state["epoch_samples"], state["step"]) == (1, 8, 32, 4)
    a, b = (load_file(str(step_dir(r, 4) / "model.safetensors")) for r in (run, source))
    start = load_file(str(step_dir(source, 2) / "model.safetensors"))
    params = {name for name, _ in sepp.se_resnet18(num_classes=3).named_parameters()}
    # Measured equal to the bit (2-core Xeon). The bound leaves room for another summation order where the thread
    # counts differ, and is far below what a wrong batch or a lost accumulation step (an update off by half) gives.
    # torch.compile is not used here: its kernels sum in their own order, which moved a zero-initialised BN's
    # parameters, made only of the two steps' updates, by up to 2e-3 of those updates (tests/test_compile_export.py
    # holds compiled training to eager).
    for k in params:
        err = float((a[k] - b[k]).abs().max())
        update = float((b[k] - start[k]).abs().max())
        assert err <= 1e-5 * float(b[k].abs().max()) + 1e-4 * update + 1e-9, (k, err, update)
    assert not all(torch.equal(a[k], start[k]) for k in params)


KILLED_WHILE_SAVING = textwrap.dedent("""
    import resource, runpy, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it; by default the kernel kills the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 20, 4 << 20))  # no file past 4 MB: the weights (45 MB) die
    sys.argv[0] = "sepp.train"
    runpy.run_module("sepp.train", run_name="__main__")
""")


def test_killed_while_writing_a_checkpoint_leaves_the_previous_one(runs, toy_data, tmp_path):
    two_steps, _ = runs["two_steps"]
    run = shutil.copytree(two_steps, tmp_path / "killed")
    before = (step_dir(run, 2) / "model.safetensors").read_bytes()
    done = finish(
        cli(toy_data, run, *SINGLE, "--resume", run, "--max-steps", "3", "--no-progress", script=KILLED_WHILE_SAVING)
    )
    assert done.returncode == -signal.SIGXFSZ, done.stderr[-3000:]  # it died while writing step 3
    assert [p.name for p in (run / "checkpoints").glob(".tmp-step-00000003-*")]  # ... half-way through
    assert not step_dir(run, 3).exists()
    assert T.resolve_checkpoint(str(run)) == step_dir(run, 2)
    model, ema, state = T.load_checkpoint(step_dir(run, 2))
    assert state["step"] == 2 and ema is not None
    sepp.load_weights(sepp.se_resnet18(num_classes=3), step_dir(run, 2) / "model.safetensors")
    assert (step_dir(run, 2) / "model.safetensors").read_bytes() == before


# ---------------------------------------------------------------------------------------------------- bad input
def snapshot(folder: Path):
    """Every file under folder with its inode, size and modification time: a replaced or rewritten file shows."""
    return {
        str(p.relative_to(folder)): (st.st_ino, st.st_size, st.st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        for st in [p.stat()]
    }


def break_data(data: Path, tmp: Path) -> Path:
    copy = shutil.copytree(data, tmp / "data")
    (copy / "train" / "yellow").mkdir()
    return copy


def corrupted(name: str):
    """Truncates a file of the run's checkpoint; the data is left as it is."""

    def make(data: Path, run: Path, tmp: Path) -> Path:
        path = step_dir(run, 2) / name
        content = path.read_bytes()
        path.unlink()  # the run folder is a copy made of hard links: replace the file, do not write into it
        path.write_bytes(content[: len(content) // 2])
        return data

    return make


def unchanged(data: Path, run: Path, tmp: Path) -> Path:
    return data


# case -> (makes the input, given (data, run folder, tmp), and returns --data; extra flags; what the error says).
# Every case points --output at a copy of a 2-step run, and resumes it unless the case is in NO_RESUME.
BAD_INPUT = {
    "missing_data_folder": (lambda data, run, tmp: tmp / "nowhere", [], "--data: no folder"),
    "empty_class_folder": (
        lambda data, run, tmp: break_data(data, tmp),
        [],
        "Found no valid file for the classes yellow",
    ),
    "unknown_model": (
        unchanged,
        ["--model", "se_resnet9000"],
        "--model: unknown model 'se_resnet9000'; expected one of resnet18",
    ),
    "corrupt_checkpoint_state": (corrupted("state.pt"), [], "state.pt' is not a readable checkpoint state"),
    "corrupt_checkpoint_weights": (corrupted("model.safetensors"), [], "not a valid safetensors file"),
    "output_holds_another_run": (unchanged, [], "already holds a run"),
    "sync_bn": (unchanged, ["--sync-bn"], "BN statistics stay per process"),
}
NO_RESUME = {"output_holds_another_run"}


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_is_one_clear_error_and_nothing_is_overwritten(case, runs, toy_data, tmp_path, capsys):
    make, extra, message = BAD_INPUT[case]
    run = shutil.copytree(runs["two_steps"][0], tmp_path / "run", copy_function=os.link)
    data = make(toy_data, run, tmp_path)
    before = snapshot(run)
    resume = [] if case in NO_RESUME else ["--resume", run]
    code = T.main([str(a) for a in cli_args(data, run, *SINGLE, *resume, *extra)])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("sepp.train: error: "), err
    assert message in err, err
    assert snapshot(run) == before


def test_bad_input_exit_code_of_the_command(tmp_path):
    done = finish(python("-m", "sepp.train", "--data", tmp_path / "nowhere", "--output", tmp_path / "out"))
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"sepp.train: error: --data: no folder {str(tmp_path / 'nowhere')!r}"]
    assert not (tmp_path / "out").exists()
