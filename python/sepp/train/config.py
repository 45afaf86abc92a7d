"""The command line of ``python -m sepp.train``: :class:`Config` (one field per flag), :func:`parse_args`, and
:class:`TrainError` for problems with the command's input."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Optional, Sequence

import sepp

__all__ = ["TrainError", "Config", "parse_args"]


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
    sync_bn: bool = False  # refused: BN stays per process (see the package docstring)
    workers: int = 4
    seed: int = 0
    device: Optional[str] = None  # None: cuda if available, else cpu
    resume: Optional[str] = None
    max_steps: int = 0  # stop (with a checkpoint) after this many optimizer steps in all; 0 = run every epoch
    save_every: int = 0  # also checkpoint every this many steps; 0 = at the end of each epoch only
    keep: int = 2  # checkpoints kept; 0 = all
    log_every: int = 10
    progress: bool = True


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sepp.train",
        description="Train a sepp model on an ImageFolder (DIR/train, DIR/val). Runs "
        "alone or under torchrun --nproc-per-node N; --batch-size is per process.",
    )
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
    p.add_argument(
        "--amp",
        nargs="?",
        const="bf16",
        choices=("bf16", "fp16"),
        default=None,
        help="autocast to bf16 (the default when given alone) or fp16 (with a gradient scaler)",
    )
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
    p.add_argument(
        "--save-every",
        type=int,
        default=d.save_every,
        metavar="STEPS",
        help="checkpoint every N steps too (default: at each epoch's end only)",
    )
    p.add_argument("--keep", type=int, default=d.keep, help="checkpoints to keep (0 = all)")
    p.add_argument("--log-every", type=int, default=d.log_every, metavar="STEPS")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> Config:
    """The :class:`Config` of a command line (``sys.argv[1:]`` when ``argv`` is None); a bad value exits with
    argparse's usage message and code 2."""
    p = _parser()
    config = Config(**vars(p.parse_args(argv)))
    for name in ("epochs", "batch_size", "image_size", "accum_steps", "log_every"):
        if getattr(config, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(config, name)}")
    for name in ("workers", "max_steps", "save_every", "keep", "warmup_epochs", "label_smoothing", "ema"):
        if getattr(config, name) < 0:
            p.error(f"--{name.replace('_', '-')} must not be negative, got {getattr(config, name)}")
    if not (config.ema < 1 and config.label_smoothing < 1):
        p.error("--ema and --label-smoothing must be below 1")
    return config
