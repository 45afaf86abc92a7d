"""Training sepp models on an ImageFolder, on one process or many: ``python -m sepp.train --data DIR --model NAME``.

The same command runs alone or under ``torchrun --nproc-per-node N`` (DistributedDataParallel; NCCL on GPUs, gloo on
CPUs). The recipe is the paper's: SGD with momentum 0.9 and weight decay 1e-4, the learning rate 0.6 per 1024 images
of the global batch (per-process batch x processes x accumulation steps), here with a linear warm-up, then a cosine or
step decay.

Every random draw is a function of ``--seed`` and the position in training: the order of an epoch of (seed, epoch),
a sample's augmentation of (seed, epoch, sample), the model's own draws (dropout) of (seed, step, rank). So a
checkpoint's (epoch, images consumed in the epoch, step) is the whole random state, and ``--resume`` continues exactly,
on any number of processes: the next global batch is the same images whatever the world size.

A checkpoint is a folder ``OUTPUT/checkpoints/step-NNNNNNNN`` holding ``model.safetensors`` (and ``ema.safetensors``)
and ``state.pt`` (optimizer, scaler, position, schedule; tensors and plain values only, read back with
``torch.load(weights_only=True)``). It is written as a temporary folder, synced, then renamed; ``checkpoints/latest``
names the newest and is replaced atomically, so a crash at any point leaves the previous checkpoint whole.

BatchNorm stays per process: sepp's BN layers are C++ modules that ``torch.nn.SyncBatchNorm`` cannot replace, so each
process normalises over its own ``--batch-size`` images, and DDP broadcasts rank 0's running statistics.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as _checkpoint
from torch.utils.data import DataLoader, Dataset, Sampler

import sepp

from .weights import fsync_dir as _fsync_dir
from .weights import load_tensors, save_tensors
from .weights import umask as _umask
from .weights import write_atomic as _write_atomic

__all__ = ["Config", "TrainError", "train", "main", "parse_args", "GlobalBatchSampler", "CheckpointedStages",
           "ModelEma", "save_checkpoint", "load_checkpoint", "resolve_checkpoint", "learning_rate"]

CHECKPOINT_FORMAT = "sepp.train/1"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class TrainError(Exception):
    """A problem with the command's input (data, model name, checkpoint, output folder): one line, no traceback."""


@dataclass
class Config:
    """What ``python -m sepp.train`` takes; each field is the flag of the same name (``batch_size``:
    ``--batch-size``)."""

    data: str
    model: str = "se_resnet50"
    output: str = "runs/sepp"
    epochs: int = 100
    batch_size: int = 64  # per process
    image_size: int = 224
    lr: Optional[float] = None  # None: 0.6 * global batch / 1024
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # or "step"
    warmup_epochs: float = 5.0
    step_epochs: float = 30.0  # "step": multiply by gamma every step_epochs (the paper: 0.1 every 30)
    gamma: float = 0.1
    label_smoothing: float = 0.0
    amp: Optional[str] = None  # None, "bf16" or "fp16"
    channels_last: bool = False
    accum_steps: int = 1
    ema: float = 0.0  # decay of an EMA of the weights; 0 = none
    activation_checkpointing: bool = False
    compile: bool = False
    sync_bn: bool = False  # refused: BN stays per process (see the module docstring)
    workers: int = 4
    seed: int = 0
    device: Optional[str] = None  # None: cuda if available, else cpu
    resume: Optional[str] = None
    max_steps: int = 0  # stop (with a checkpoint) after this many optimizer steps in all; 0 = run every epoch
    save_every: int = 0  # also checkpoint every this many steps; 0 = at the end of each epoch only
    keep: int = 2  # checkpoints kept; 0 = all
    log_every: int = 10
    progress: bool = True


# ---------------------------------------------------------------------------------------------------- command line
def parse_args(argv: Optional[Sequence[str]] = None) -> Config:
    p = argparse.ArgumentParser(
        prog="python -m sepp.train", description="Train a sepp model on an ImageFolder (DIR/train, DIR/val). Runs "
        "alone or under torchrun --nproc-per-node N; --batch-size is per process.")
    d = Config(data="")
    p.add_argument("--data", required=True, metavar="DIR", help="folder with train/ and val/ in ImageFolder layout")
    p.add_argument("--model", default=d.model, help=f"a sepp factory: {', '.join(sepp.model_names())}")
    p.add_argument("--output", default=d.output, metavar="DIR", help="checkpoints and logs (default %(default)s)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per process and step")
    p.add_argument("--image-size", type=int, default=d.image_size)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 0.6 * global batch / 1024)")
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--schedule", choices=("cosine", "step"), default=d.schedule)
    p.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    p.add_argument("--step-epochs", type=float, default=d.step_epochs, help="step schedule: decay every N epochs")
    p.add_argument("--gamma", type=float, default=d.gamma, help="step schedule: the decay factor")
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--amp", nargs="?", const="bf16", choices=("bf16", "fp16"), default=None,
                   help="autocast to bf16 (the default when given alone) or fp16 (with a gradient scaler)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--accum-steps", type=int, default=d.accum_steps, help="micro-batches per optimizer step")
    p.add_argument("--ema", type=float, default=d.ema, metavar="DECAY", help="keep an EMA of the weights (0 = none)")
    p.add_argument("--activation-checkpointing", action="store_true", help="recompute each stage in backward")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--sync-bn", action="store_true", help="refused: sepp's BatchNorm stays per process")
    p.add_argument("--workers", type=int, default=d.workers, help="data-loading processes per training process")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--resume", default=None, metavar="PATH", help="a checkpoint folder, or a run's --output")
    p.add_argument("--max-steps", type=int, default=d.max_steps, help="stop after N optimizer steps in all")
    p.add_argument("--save-every", type=int, default=d.save_every, metavar="STEPS",
                   help="checkpoint every N steps too (default: at each epoch's end only)")
    p.add_argument("--keep", type=int, default=d.keep, help="checkpoints to keep (0 = all)")
    p.add_argument("--log-every", type=int, default=d.log_every, metavar="STEPS")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    args = p.parse_args(argv)
    config = Config(**vars(args))
    for name in ("epochs", "batch_size", "image_size", "accum_steps", "log_every"):
        if getattr(config, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(config, name)}")
    for name in ("workers", "max_steps", "save_every", "keep", "warmup_epochs", "label_smoothing", "ema"):
        if getattr(config, name) < 0:
            p.error(f"--{name.replace('_', '-')} must not be negative, got {getattr(config, name)}")
    if not (config.ema < 1 and config.label_smoothing < 1):
        p.error("--ema and --label-smoothing must be below 1")
    return config


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m sepp.train``: runs :func:`train`; a problem with the input is one line on stderr and exit code 2."""
    config = parse_args(argv)
    try:
        train(config)
    except TrainError as e:
        rank = os.environ.get("RANK")
        where = f" (rank {rank})" if rank not in (None, "0") else ""
        print(f"sepp.train: error{where}: {e}", file=sys.stderr)
        return 2
    return 0


# ---------------------------------------------------------------------------------------------------- randomness
def _seed(*parts: int) -> int:
    """A 63-bit seed that is a fixed function of the given integers."""
    digest = hashlib.blake2b(",".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


# ---------------------------------------------------------------------------------------------------- data
class GlobalBatchSampler(Sampler[int]):
    """This process's images of each global batch, in an order that depends on (seed, epoch) alone.

    The epoch's order is one permutation of the dataset. Step ``s`` consumes the ``global_batch`` images after
    ``start + s * global_batch`` in it: micro-batch ``a`` of process ``r`` is the ``batch_size`` images at offset
    ``(a * world_size + r) * batch_size``. ``start`` is the number of images already consumed in the epoch (a resume);
    an incomplete last global batch is dropped.
    """

    def __init__(self, num_samples: int, batch_size: int, world_size: int, rank: int, accum_steps: int, seed: int,
                 epoch: int, start: int = 0) -> None:
        self.n, self.batch_size, self.world_size, self.rank = num_samples, batch_size, world_size, rank
        self.accum_steps, self.seed, self.epoch, self.start = accum_steps, seed, epoch, start
        self.global_batch = batch_size * world_size * accum_steps
        self.steps = max(0, num_samples - start) // self.global_batch

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(_seed(self.seed, self.epoch))).tolist()
        for step in range(self.steps):
            base = self.start + step * self.global_batch
            for a in range(self.accum_steps):
                offset = base + (a * self.world_size + self.rank) * self.batch_size
                yield from order[offset:offset + self.batch_size]

    def __len__(self) -> int:
        return self.steps * self.accum_steps * self.batch_size


class _Augmented(Dataset):
    """An ImageFolder whose random transform draws from a generator seeded by (seed, epoch, index)."""

    def __init__(self, folder: Any, transform: Any, seed: int) -> None:
        self.folder, self.transform, self.seed, self.epoch = folder, transform, seed, 0

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        image, label = self.folder[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_seed(self.seed, self.epoch, index))
            return self.transform(image), label


def _image_folder(root: Path, what: str) -> Any:
    from torchvision.datasets import ImageFolder

    if not root.is_dir():
        raise TrainError(f"--data: no {what} folder {str(root)!r} (expected DIR/train and DIR/val, one subfolder "
                         f"per class)")
    try:
        return ImageFolder(str(root))
    except (FileNotFoundError, RuntimeError) as e:  # no class folder / a class folder without images
        raise TrainError(f"--data: {str(root)!r}: {e}") from None


def build_datasets(config: Config) -> Tuple[_Augmented, Any, List[str]]:
    """The training set (random crops and flips, seeded per sample), the validation set (resize and centre crop) and
    the class names."""
    from torchvision import transforms as T

    root = Path(config.data)
    if not root.is_dir():
        raise TrainError(f"--data: no folder {str(root)!r}")
    train_folder, val_folder = _image_folder(root / "train", "train"), _image_folder(root / "val", "val")
    if val_folder.classes != train_folder.classes:
        raise TrainError(f"--data: the classes of val/ {val_folder.classes} differ from those of train/ "
                         f"{train_folder.classes}")
    size = config.image_size
    normalize = [T.ToTensor(), T.Normalize(MEAN, STD)]
    train_set = _Augmented(train_folder, T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), *normalize]),
                           config.seed)
    val_folder.transform = T.Compose([T.Resize(round(size / 0.875)), T.CenterCrop(size), *normalize])
    return train_set, val_folder, train_folder.classes


# ---------------------------------------------------------------------------------------------------- model pieces
class CheckpointedStages(nn.Module):
    """A sepp ResNet whose four stages are recomputed in backward (``torch.utils.checkpoint``, non-reentrant): only
    the stage boundaries are kept for backward. The gradients are those of the plain model; BN running statistics are
    updated twice per step (once more in the recomputation)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        h = m.maxpool(torch.relu(m.bn1(m.conv1(x))))  # ResNet's stem, as in C++ (ResNetImpl::stem)
        for stage in (m.layer1, m.layer2, m.layer3, m.layer4):
            h = _checkpoint(stage, h, use_reentrant=False)
        return m.forward_head(h)


class ModelEma:
    """An exponential moving average of a model's parameters and buffers, in a deep copy of it (a C++ clone for sepp
    models): ``ema = decay * ema + (1 - decay) * model`` after each step; integer buffers are copied."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.model, self.decay = model, decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self) -> None:
        pairs = list(zip(self.module.state_dict().values(), self.model.state_dict().values()))
        floats = [(e, m) for e, m in pairs if e.is_floating_point()]
        torch._foreach_lerp_([e for e, _ in floats], [m for _, m in floats], 1.0 - self.decay)
        for e, m in pairs:
            if not e.is_floating_point():
                e.copy_(m)


def learning_rate(config: Config, base_lr: float, t: float, t_end: float) -> float:
    """The learning rate of a step that runs from ``t`` to ``t_end`` (in epochs): linear warm-up to ``base_lr`` over
    ``warmup_epochs`` (reached at a step's end), then cosine to 0 at ``epochs``, or ``gamma`` every ``step_epochs``."""
    w = config.warmup_epochs
    if w > 0 and t < w:
        return base_lr * min(1.0, t_end / w)
    if config.schedule == "cosine":
        span = max(config.epochs - w, 1e-12)
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, (t - w) / span)))
    return base_lr * config.gamma ** math.floor((t - w) / config.step_epochs + 1e-9)


# ---------------------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(root: Path, step: int, model: nn.Module, ema: Optional[nn.Module], state: Dict[str, Any],
                    keep: int = 0) -> Path:
    """Writes ``root/step-NNNNNNNN/{model.safetensors, ema.safetensors, state.pt}`` as a temporary folder, syncs it,
    renames it into place and then points ``root/latest`` at it (both renames atomic). An existing checkpoint is
    never replaced: the same step saved again (a run resumed from an older checkpoint) becomes ``step-NNNNNNNN.1``.
    Keeps this checkpoint and the ``keep - 1`` before it (0 = all). ``state`` must hold tensors and plain Python
    values only."""
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-*"):  # left by a writer that died mid-save; this process is the only writer
        shutil.rmtree(stale, ignore_errors=True)
    name = f"step-{step:08d}"
    final, again = root / name, 0
    while final.exists():
        again += 1
        final = root / f"{name}.{again}"
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=root))
    try:
        tmp.chmod(0o777 & ~_umask())
        save_tensors(model.state_dict(), tmp / "model.safetensors")
        if ema is not None:
            save_tensors(ema.state_dict(), tmp / "ema.safetensors")
        buffer = io.BytesIO()
        torch.save(state, buffer)
        _write_atomic(tmp / "state.pt", buffer.getvalue())
        os.rename(tmp, final)
        _fsync_dir(root)
        _write_atomic(root / "latest", f"{final.name}\n".encode())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep:  # the newest `keep` up to this one; later ones (a resume from an older checkpoint) are left alone
        older = sorted(p for p in root.glob("step-*") if p.is_dir() and p.name < final.name)
        for old in older[:max(0, len(older) - (keep - 1))]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def resolve_checkpoint(path: str) -> Path:
    """The checkpoint folder that ``--resume PATH`` means: PATH itself, or what PATH/latest or
    PATH/checkpoints/latest names."""
    p = Path(path)
    if (p / "state.pt").is_file():
        return p
    for root in (p, p / "checkpoints"):
        latest = root / "latest"
        if latest.is_file():
            name = latest.read_text().strip()
            if not name.startswith("step-") or "/" in name or not (root / name / "state.pt").is_file():
                raise TrainError(f"--resume {path}: {latest} names {name!r}, which is not a checkpoint folder there")
            return root / name
    raise TrainError(f"--resume {path}: no checkpoint there (expected a folder with state.pt, or a run's --output "
                     f"with checkpoints/latest)")


def load_checkpoint(folder: Path) -> Tuple[Dict[str, torch.Tensor], Optional[Dict[str, torch.Tensor]], Dict[str, Any]]:
    """(model tensors, EMA tensors or None, state) of a checkpoint folder; raises TrainError naming the bad file.
    ``state.pt`` is read with ``weights_only=True``: no pickled object is ever run."""
    def read(name: str) -> Dict[str, torch.Tensor]:
        try:
            return load_tensors(folder / name)
        except ValueError as e:
            raise TrainError(f"--resume: {str(e).splitlines()[0]}") from None

    try:
        state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: zipfile, pickle and EOF errors alike
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise TrainError(f"--resume: {str(folder / 'state.pt')!r} is not a readable checkpoint state: {first}") \
            from None
    keys = ("model", "classes", "epoch", "epoch_samples", "step", "optimizer", "scaler")
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or any(k not in state for k in keys):
        raise TrainError(f"--resume: {str(folder / 'state.pt')!r} is not a sepp.train checkpoint state")
    ema = read("ema.safetensors") if (folder / "ema.safetensors").exists() else None
    return read("model.safetensors"), ema, state


def _restore(folder: Path, model: nn.Module, ema: Optional[ModelEma], optimizer: torch.optim.Optimizer,
             scaler: torch.amp.GradScaler, model_name: str, classes: List[str]) -> Dict[str, Any]:
    """Loads a checkpoint into the model, the EMA, the optimizer and the scaler, after checking that all of it fits:
    a failed resume changes nothing."""
    tensors, ema_tensors, state = load_checkpoint(folder)
    if state["model"] != model_name or state["classes"] != classes:
        raise TrainError(f"--resume: {folder} is a checkpoint of {state['model']} on classes {state['classes']}, "
                         f"not of {model_name} on {classes}")
    _check_fits(model, tensors, folder / "model.safetensors")
    if ema is not None:
        if ema_tensors is None:
            raise TrainError(f"--resume: {folder} has no ema.safetensors, and --ema is on")
        _check_fits(ema.module, ema_tensors, folder / "ema.safetensors")
    try:
        optimizer.load_state_dict(state["optimizer"])  # checks the parameter groups before changing anything
        scaler.load_state_dict(state["scaler"])
    except (ValueError, KeyError, RuntimeError) as e:
        raise TrainError(f"--resume: {folder / 'state.pt'}: the optimizer state does not fit the model: {e}") \
            from None
    with torch.no_grad():
        for module, values in ((model, tensors), (ema.module if ema else None, ema_tensors)):
            if module is not None:
                for k, v in module.state_dict().items():
                    v.copy_(values[k])
    return state


def _check_fits(model: nn.Module, tensors: Dict[str, torch.Tensor], path: Path) -> None:
    own = model.state_dict()
    if set(own) != set(tensors) or any(own[k].shape != tensors[k].shape for k in own):
        raise TrainError(f"--resume: {str(path)!r} does not match the model (names or shapes differ)")


# ---------------------------------------------------------------------------------------------------- logs
class _CsvLog:
    """Rows appended to a CSV file, flushed at once. On resume, rows past the checkpoint's step are dropped."""

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self.path, self.columns = path, list(columns)

    def truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        with self.path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
        text = io.StringIO()
        writer = csv.DictWriter(text, self.columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        _write_atomic(self.path, text.getvalue().encode())

    def write(self, row: Dict[str, Any]) -> None:
        new = not self.path.exists()
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, self.columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


STEP_COLUMNS = ("step", "epoch", "loss", "lr", "images_per_s")
EPOCH_COLUMNS = ("epoch", "step", "lr", "train_loss", "val_loss", "val_top1", "val_top5", "ema_val_top1",
                 "ema_val_top5", "images_per_s", "seconds")


# ---------------------------------------------------------------------------------------------------- the loop
def _setup_distributed(device_arg: Optional[str]) -> Tuple[int, int, torch.device]:
    """(rank, world size, device). Under torchrun (WORLD_SIZE > 1) joins the process group: NCCL for CUDA, gloo for
    CPU; each process takes the GPU of its LOCAL_RANK."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(device_arg or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainError(f"--device {device_arg}: no CUDA device is available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                device_id=device if device.type == "cuda" else None)
    return rank, world, device


def _sync_buffers(world: int, *models: Optional[nn.Module]) -> None:
    """Rank 0's BN running statistics on every process (DDP broadcasts them before each forward, and each process
    then updates its own copy)."""
    if world > 1:
        for model in models:
            for b in model.buffers() if model is not None else ():
                dist.broadcast(b, src=0)


def _all_sum(values: List[float], device: torch.device, world: int) -> List[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if world > 1:
        dist.all_reduce(t)
    return t.tolist()


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, config: Config,
             world: int) -> Dict[str, float]:
    """Loss, top-1 and top-5 accuracy (in %) over the whole validation set (each process evaluates its share)."""
    was_training = model.training
    model.eval()
    loss = top1 = top5 = count = 0.0
    for x, y in loader:
        x, y = _to_device(x, y, device, config)
        with _autocast(device, config):
            out = model(x).float()
        loss += F.cross_entropy(out, y, reduction="sum").item()
        k = min(5, out.shape[1])
        hits = out.topk(k, dim=1).indices.eq(y[:, None])
        top1 += hits[:, 0].sum().item()
        top5 += hits.any(dim=1).sum().item()
        count += y.numel()
    model.train(was_training)
    loss, top1, top5, count = _all_sum([loss, top1, top5, count], device, world)
    count = max(count, 1.0)
    return {"loss": loss / count, "top1": 100.0 * top1 / count, "top5": 100.0 * top5 / count}


def _to_device(x: torch.Tensor, y: torch.Tensor, device: torch.device, config: Config) -> Tuple[torch.Tensor, ...]:
    x = x.to(device, non_blocking=True)
    if config.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True)


def _autocast(device: torch.device, config: Config) -> Any:
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp or "", torch.float32)
    return torch.autocast(device.type, dtype=dtype, enabled=config.amp is not None)


def train(config: Config) -> Dict[str, Any]:
    """Trains as ``config`` says and returns a summary (steps, last losses and accuracies, the last checkpoint).

    Everything the run needs is checked before anything is written: the data, the model name, the checkpoint to
    resume, the output folder. A problem raises :class:`TrainError`.
    """
    if config.sync_bn:
        raise TrainError("--sync-bn: sepp's BatchNorm layers are C++ modules that torch.nn.SyncBatchNorm cannot "
                         "replace; BN statistics stay per process (each normalises its own --batch-size images)")
    if config.model not in sepp.model_names():
        raise TrainError(f"--model: unknown model {config.model!r}; expected one of {', '.join(sepp.model_names())}")
    rank, world, device = _setup_distributed(config.device)
    try:
        return _train(config, rank, world, device)
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(config: Config, rank: int, world: int, device: torch.device) -> Dict[str, Any]:
    train_set, val_set, classes = build_datasets(config)
    global_batch = config.batch_size * world * config.accum_steps
    if len(train_set) < global_batch:
        raise TrainError(f"--data: train/ has {len(train_set)} images, fewer than one global batch of {global_batch} "
                         f"(--batch-size {config.batch_size} x {world} process(es) x --accum-steps "
                         f"{config.accum_steps})")
    base_lr = config.lr if config.lr is not None else 0.6 * global_batch / 1024

    torch.manual_seed(config.seed)
    model = sepp.create_model(config.model, num_classes=len(classes)).to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    ema = ModelEma(model, config.ema) if config.ema > 0 else None
    optimizer = torch.optim.SGD(model.parameters(), lr=base_lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")

    epoch, epoch_samples, step = 0, 0, 0
    folder = resolve_checkpoint(config.resume) if config.resume else None
    if folder is not None:
        state = _restore(folder, model, ema, optimizer, scaler, config.model, classes)
        epoch, epoch_samples, step = state["epoch"], state["epoch_samples"], state["step"]
    out = Path(config.output)
    ckpt_root = out / "checkpoints"
    if (ckpt_root / "latest").exists() and (folder is None or folder.parent.resolve() != ckpt_root.resolve()):
        raise TrainError(f"--output {config.output}: it already holds a run (checkpoints/latest); continue it with "
                         f"--resume {config.output}, or choose another --output")

    # Nothing was written so far; from here on the run owns --output.
    net: nn.Module = CheckpointedStages(model) if config.activation_checkpointing else model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        net = torch.compile(net)
    steps_log, epochs_log = _CsvLog(out / "steps.csv", STEP_COLUMNS), _CsvLog(out / "epochs.csv", EPOCH_COLUMNS)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        _write_atomic(out / "config.json", json.dumps({**dataclasses.asdict(config), "world_size": world,
                                                      "global_batch": global_batch, "base_lr": base_lr},
                                                     indent=2).encode())
        steps_log.truncate_after(step)
        epochs_log.truncate_after(step)
        if world > 1:
            print(f"sepp.train: {world} processes, global batch {global_batch}; BatchNorm statistics are per process",
                  file=sys.stderr)

    def position_state() -> Dict[str, Any]:
        return {"format": CHECKPOINT_FORMAT, "model": config.model, "classes": classes, "epoch": epoch,
                "epoch_samples": epoch_samples, "step": step, "seed": config.seed, "world_size": world,
                "global_batch": global_batch, "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                "scheduler": {"schedule": config.schedule, "base_lr": base_lr, "lr": optimizer.param_groups[0]["lr"],
                              "epoch_position": epoch + epoch_samples / len(train_set)}}

    saved_step, last_checkpoint = (step if config.resume else -1), None

    def save() -> None:
        nonlocal saved_step, last_checkpoint
        if saved_step == step:
            return
        _sync_buffers(world, model, ema.module if ema else None)
        if rank == 0:
            last_checkpoint = save_checkpoint(ckpt_root, step, model, ema.module if ema else None, position_state(),
                                              config.keep)
        saved_step = step

    loader_args = dict(batch_size=config.batch_size, num_workers=config.workers, pin_memory=device.type == "cuda")
    val_loader = DataLoader(val_set, sampler=range(rank, len(val_set), world), **loader_args)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    summary: Dict[str, Any] = {"output": str(out), "world_size": world, "global_batch": global_batch,
                               "base_lr": base_lr}
    stop = bool(config.max_steps) and step >= config.max_steps
    while epoch < config.epochs and not stop:
        sampler = GlobalBatchSampler(len(train_set), config.batch_size, world, rank, config.accum_steps, config.seed,
                                     epoch, epoch_samples)
        train_set.epoch = epoch
        batches = iter(DataLoader(train_set, sampler=sampler, **loader_args))
        net.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        epoch_steps, started = 0, time.perf_counter()
        bar = _progress(sampler.steps, epoch, config, rank)
        for _ in range(sampler.steps):
            t0 = time.perf_counter()
            t = epoch + epoch_samples / len(train_set)
            lr = learning_rate(config, base_lr, t, t + global_batch / len(train_set))
            for group in optimizer.param_groups:
                group["lr"] = lr
            torch.manual_seed(_seed(config.seed, step, rank))  # the model's own draws (dropout)
            loss = _train_step(net, batches, optimizer, scaler, criterion, device, config, world)
            step, epoch_samples, epoch_steps = step + 1, epoch_samples + global_batch, epoch_steps + 1
            loss_sum += loss
            if ema is not None:
                ema.update()
            logged = step % config.log_every == 0
            value = loss.item() if logged or bar is not None else 0.0  # waits for the step to end on a GPU
            images_per_s = global_batch / (time.perf_counter() - t0)
            if logged:
                mean_loss = _all_sum([value], device, world)[0] / world
                if rank == 0:
                    steps_log.write({"step": step, "epoch": epoch, "loss": mean_loss, "lr": lr,
                                     "images_per_s": images_per_s})
            if bar is not None:
                bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.4g}", img_s=f"{images_per_s:.0f}")
                bar.update()
            if config.save_every and step % config.save_every == 0:
                save()
            if config.max_steps and step >= config.max_steps:
                stop = True
                break
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - started
        if stop and epoch_samples + global_batch <= len(train_set):
            break  # stopped mid-epoch: no evaluation
        train_loss = _all_sum([loss_sum.item(), epoch_steps], device, world)
        _sync_buffers(world, model, ema.module if ema else None)
        val = evaluate(model, val_loader, device, config, world)  # not through DDP: shares may differ in length
        ema_val = evaluate(ema.module, val_loader, device, config, world) if ema is not None else None
        row = {"epoch": epoch, "step": step, "lr": optimizer.param_groups[0]["lr"],
               "train_loss": train_loss[0] / max(train_loss[1], 1), "val_loss": val["loss"], "val_top1": val["top1"],
               "val_top5": val["top5"], "images_per_s": global_batch * epoch_steps / max(seconds, 1e-9),
               "seconds": seconds}
        if ema_val is not None:
            row.update(ema_val_top1=ema_val["top1"], ema_val_top5=ema_val["top5"])
        if rank == 0:
            epochs_log.write(row)
            print(f"sepp.train: epoch {epoch + 1}/{config.epochs}: train loss {row['train_loss']:.4f}, val loss "
                  f"{val['loss']:.4f}, top-1 {val['top1']:.2f}%, top-5 {val['top5']:.2f}%, "
                  f"{row['images_per_s']:.0f} images/s", file=sys.stderr)
        summary.update(row)
        epoch, epoch_samples = epoch + 1, 0
        save()
    save()
    summary.update(step=step, epoch=epoch, checkpoint=str(last_checkpoint or ""))
    if rank == 0:
        _write_atomic(out / "summary.json", json.dumps(summary, indent=2).encode())
    if world > 1:
        dist.barrier()
    return summary


def _train_step(net: nn.Module, batches: Iterator, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                criterion: nn.Module, device: torch.device, config: Config, world: int) -> torch.Tensor:
    """One optimizer step over ``accum_steps`` micro-batches (DDP all-reduces on the last one only); returns this
    process's mean loss."""
    optimizer.zero_grad(set_to_none=True)
    total = torch.zeros((), dtype=torch.float64, device=device)
    for a in range(config.accum_steps):
        x, y = _to_device(*next(batches), device, config)
        last = a == config.accum_steps - 1
        sync = contextlib.nullcontext() if last or world == 1 else _no_sync(net)
        with sync:
            with _autocast(device, config):
                out = net(x)
            loss = criterion(out.float(), y) / config.accum_steps
            scaler.scale(loss).backward()
        total += loss.detach()
    scaler.step(optimizer)
    scaler.update()
    return total


def _no_sync(net: nn.Module) -> Any:
    ddp = getattr(net, "_orig_mod", net)  # through torch.compile's wrapper
    return ddp.no_sync()


def _progress(total: int, epoch: int, config: Config, rank: int) -> Any:
    if rank != 0 or not config.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=f"epoch {epoch + 1}/{config.epochs}", unit="step", dynamic_ncols=True)


if __name__ == "__main__":
    sys.exit(main())
