"""The training loop: the learning-rate schedule, the process group, the optimizer steps, the evaluation, and
:func:`main`, the command."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

import sepp

from ..files import write_atomic
from .checkpoints import (
    CHECKPOINT_FORMAT,
    EPOCH_COLUMNS,
    STEP_COLUMNS,
    CsvLog,
    resolve_checkpoint,
    restore_checkpoint,
    save_checkpoint,
)
from .config import Config, TrainError, parse_args
from .data import GlobalBatchSampler, build_datasets, derive_seed
from .model import CheckpointedStages, ModelEma

__all__ = ["train", "main", "evaluate", "learning_rate"]


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


# ---------------------------------------------------------------------------------------------------- processes
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
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo", device_id=device if device.type == "cuda" else None
        )
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


def _no_sync(net: nn.Module) -> Any:
    ddp = getattr(net, "_orig_mod", net)  # through torch.compile's wrapper
    return ddp.no_sync()


# ---------------------------------------------------------------------------------------------------- steps
def _to_device(x: torch.Tensor, y: torch.Tensor, device: torch.device, config: Config) -> Tuple[torch.Tensor, ...]:
    x = x.to(device, non_blocking=True)
    if config.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True)


def _autocast(device: torch.device, config: Config) -> Any:
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp or "", torch.float32)
    return torch.autocast(device.type, dtype=dtype, enabled=config.amp is not None)


def _train_step(
    net: nn.Module,
    batches: Iterator,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    criterion: nn.Module,
    device: torch.device,
    config: Config,
    world: int,
) -> torch.Tensor:
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


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: DataLoader, device: torch.device, config: Config, world: int
) -> Dict[str, float]:
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


def _progress(total: int, epoch: int, config: Config, rank: int) -> Any:
    if rank != 0 or not config.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=f"epoch {epoch + 1}/{config.epochs}", unit="step", dynamic_ncols=True)


# ---------------------------------------------------------------------------------------------------- the run
class _Run:
    """A run's model, optimizer and position (epoch, images consumed in the epoch, step), and its checkpoints.

    The position is the whole random state of the run, so a checkpoint holds it with the weights and the optimizer.
    """

    def __init__(
        self,
        config: Config,
        rank: int,
        world: int,
        device: torch.device,
        classes: List[str],
        num_samples: int,
        global_batch: int,
        model: nn.Module,
        output: Path,
    ) -> None:
        self.config, self.rank, self.world, self.device = config, rank, world, device
        self.classes, self.num_samples, self.global_batch, self.model = classes, num_samples, global_batch, model
        self.base_lr = config.lr if config.lr is not None else 0.6 * global_batch / 1024
        self.ema = ModelEma(model, config.ema) if config.ema > 0 else None
        self.optimizer = torch.optim.SGD(
            model.parameters(), lr=self.base_lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")
        self.checkpoints = output / "checkpoints"
        self.epoch = self.epoch_samples = self.step = 0
        self.saved_step = -1  # the step of the last checkpoint this run wrote or resumed from
        self.last_checkpoint: Optional[Path] = None

    @property
    def ema_module(self) -> Optional[nn.Module]:
        return self.ema.module if self.ema is not None else None

    @property
    def reached_max_steps(self) -> bool:
        return bool(self.config.max_steps) and self.step >= self.config.max_steps

    def resume(self, folder: Path) -> None:
        state = restore_checkpoint(
            folder, self.model, self.ema_module, self.optimizer, self.scaler, self.config.model, self.classes
        )
        self.epoch, self.epoch_samples, self.step = state["epoch"], state["epoch_samples"], state["step"]
        self.saved_step = self.step

    def state(self) -> Dict[str, Any]:
        """What ``state.pt`` holds."""
        config = self.config
        return {
            "format": CHECKPOINT_FORMAT,
            "model": config.model,
            "classes": self.classes,
            "epoch": self.epoch,
            "epoch_samples": self.epoch_samples,
            "step": self.step,
            "seed": config.seed,
            "world_size": self.world,
            "global_batch": self.global_batch,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "scheduler": {
                "schedule": config.schedule,
                "base_lr": self.base_lr,
                "lr": self.optimizer.param_groups[0]["lr"],
                "epoch_position": self.epoch + self.epoch_samples / self.num_samples,
            },
        }

    def save(self) -> None:
        """A checkpoint of this step, unless there is one already; rank 0 writes it, with rank 0's BN statistics."""
        if self.saved_step == self.step:
            return
        _sync_buffers(self.world, self.model, self.ema_module)
        if self.rank == 0:
            self.last_checkpoint = save_checkpoint(
                self.checkpoints, self.step, self.model, self.ema_module, self.state(), self.config.keep
            )
        self.saved_step = self.step

    def train_epoch(
        self, net: nn.Module, batches: Iterator, steps: int, criterion: nn.Module, steps_log: CsvLog
    ) -> Tuple[torch.Tensor, int]:
        """Up to ``steps`` optimizer steps (fewer where --max-steps stops the run); returns the sum of their losses on
        this process and their number."""
        config, device, world, global_batch = self.config, self.device, self.world, self.global_batch
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        epoch_steps = 0
        bar = _progress(steps, self.epoch, config, self.rank)
        for _ in range(steps):
            t0 = time.perf_counter()
            t = self.epoch + self.epoch_samples / self.num_samples
            lr = learning_rate(config, self.base_lr, t, t + global_batch / self.num_samples)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            torch.manual_seed(derive_seed(config.seed, self.step, self.rank))  # the model's own draws (dropout)
            loss = _train_step(net, batches, self.optimizer, self.scaler, criterion, device, config, world)
            self.step, self.epoch_samples = self.step + 1, self.epoch_samples + global_batch
            epoch_steps += 1
            loss_sum += loss
            if self.ema is not None:
                self.ema.update()
            logged = self.step % config.log_every == 0
            value = loss.item() if logged or bar is not None else 0.0  # waits for the step to end on a GPU
            images_per_s = global_batch / (time.perf_counter() - t0)
            if logged:
                mean_loss = _all_sum([value], device, world)[0] / world
                if self.rank == 0:
                    steps_log.write(
                        {
                            "step": self.step,
                            "epoch": self.epoch,
                            "loss": mean_loss,
                            "lr": lr,
                            "images_per_s": images_per_s,
                        }
                    )
            if bar is not None:
                bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.4g}", img_s=f"{images_per_s:.0f}")
                bar.update()
            if config.save_every and self.step % config.save_every == 0:
                self.save()
            if self.reached_max_steps:
                break
        if bar is not None:
            bar.close()
        return loss_sum, epoch_steps

    def end_epoch(
        self, loss_sum: torch.Tensor, epoch_steps: int, seconds: float, val_loader: DataLoader, epochs_log: CsvLog
    ) -> Dict[str, Any]:
        """Evaluates the model (and the EMA) after an epoch, logs the epoch's row and returns it."""
        config, device, world = self.config, self.device, self.world
        train_loss = _all_sum([loss_sum.item(), epoch_steps], device, world)
        _sync_buffers(world, self.model, self.ema_module)
        val = evaluate(self.model, val_loader, device, config, world)  # not through DDP: shares may differ in length
        ema_val = evaluate(self.ema.module, val_loader, device, config, world) if self.ema is not None else None
        row = {
            "epoch": self.epoch,
            "step": self.step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": train_loss[0] / max(train_loss[1], 1),
            "val_loss": val["loss"],
            "val_top1": val["top1"],
            "val_top5": val["top5"],
            "images_per_s": self.global_batch * epoch_steps / max(seconds, 1e-9),
            "seconds": seconds,
        }
        if ema_val is not None:
            row.update(ema_val_top1=ema_val["top1"], ema_val_top5=ema_val["top5"])
        if self.rank == 0:
            epochs_log.write(row)
            print(
                f"sepp.train: epoch {self.epoch + 1}/{config.epochs}: train loss {row['train_loss']:.4f}, val loss "
                f"{val['loss']:.4f}, top-1 {val['top1']:.2f}%, top-5 {val['top5']:.2f}%, "
                f"{row['images_per_s']:.0f} images/s",
                file=sys.stderr,
            )
        return row


def train(config: Config) -> Dict[str, Any]:
    """Trains as ``config`` says and returns a summary (steps, last losses and accuracies, the last checkpoint).

    Everything the run needs is checked before anything is written: the data, the model name, the checkpoint to
    resume, the output folder. A problem raises :class:`TrainError`.
    """
    if config.sync_bn:
        raise TrainError(
            "--sync-bn: sepp's BatchNorm layers are C++ modules that torch.nn.SyncBatchNorm cannot "
            "replace; BN statistics stay per process (each normalises its own --batch-size images)"
        )
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
        raise TrainError(
            f"--data: train/ has {len(train_set)} images, fewer than one global batch of {global_batch} "
            f"(--batch-size {config.batch_size} x {world} process(es) x --accum-steps "
            f"{config.accum_steps})"
        )

    torch.manual_seed(config.seed)
    model = sepp.create_model(config.model, num_classes=len(classes)).to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    out = Path(config.output)
    run = _Run(config, rank, world, device, classes, len(train_set), global_batch, model, out)
    folder = resolve_checkpoint(config.resume) if config.resume else None
    if folder is not None:
        run.resume(folder)
    if (run.checkpoints / "latest").exists() and (
        folder is None or folder.parent.resolve() != run.checkpoints.resolve()
    ):
        raise TrainError(
            f"--output {config.output}: it already holds a run (checkpoints/latest); continue it with "
            f"--resume {config.output}, or choose another --output"
        )

    # Nothing was written so far; from here on the run owns --output.
    net: nn.Module = CheckpointedStages(model) if config.activation_checkpointing else model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        net = torch.compile(net)
    steps_log, epochs_log = CsvLog(out / "steps.csv", STEP_COLUMNS), CsvLog(out / "epochs.csv", EPOCH_COLUMNS)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(
            out / "config.json",
            json.dumps(
                {
                    **dataclasses.asdict(config),
                    "world_size": world,
                    "global_batch": global_batch,
                    "base_lr": run.base_lr,
                },
                indent=2,
            ).encode(),
        )
        steps_log.truncate_after(run.step)
        epochs_log.truncate_after(run.step)
        if world > 1:
            print(
                f"sepp.train: {world} processes, global batch {global_batch}; BatchNorm statistics are per process",
                file=sys.stderr,
            )

    loader_args = dict(batch_size=config.batch_size, num_workers=config.workers, pin_memory=device.type == "cuda")
    val_loader = DataLoader(val_set, sampler=range(rank, len(val_set), world), **loader_args)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    summary: Dict[str, Any] = {
        "output": str(out),
        "world_size": world,
        "global_batch": global_batch,
        "base_lr": run.base_lr,
    }
    while run.epoch < config.epochs and not run.reached_max_steps:
        sampler = GlobalBatchSampler(
            len(train_set),
            config.batch_size,
            world,
            rank,
            config.accum_steps,
            config.seed,
            run.epoch,
            run.epoch_samples,
        )
        train_set.epoch = run.epoch
        batches = iter(DataLoader(train_set, sampler=sampler, **loader_args))
        net.train()
        started = time.perf_counter()
        loss_sum, epoch_steps = run.train_epoch(net, batches, sampler.steps, criterion, steps_log)
        seconds = time.perf_counter() - started
        if run.reached_max_steps and run.epoch_samples + global_batch <= len(train_set):
            break  # stopped mid-epoch: no evaluation
        summary.update(run.end_epoch(loss_sum, epoch_steps, seconds, val_loader, epochs_log))
        run.epoch, run.epoch_samples = run.epoch + 1, 0
        run.save()
    run.save()
    summary.update(step=run.step, epoch=run.epoch, checkpoint=str(run.last_checkpoint or ""))
    if rank == 0:
        write_atomic(out / "summary.json", json.dumps(summary, indent=2).encode())
    if world > 1:
        dist.barrier()
    return summary
