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

The modules: :mod:`.config` (the flags), :mod:`.data` (sampler, datasets, augmentation), :mod:`.model` (activation
checkpointing, EMA), :mod:`.checkpoints` (checkpoint folders, CSV logs), :mod:`.loop` (schedule, processes, the loop).
"""

from __future__ import annotations

from .checkpoints import (
    CHECKPOINT_FORMAT,
    EPOCH_COLUMNS,
    STEP_COLUMNS,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from .config import Config, TrainError, parse_args
from .data import MEAN, STD, GlobalBatchSampler, build_datasets
from .loop import evaluate, learning_rate, main, train
from .model import CheckpointedStages, ModelEma

__all__ = [
    "CHECKPOINT_FORMAT",
    "EPOCH_COLUMNS",
    "STEP_COLUMNS",
    "MEAN",
    "STD",
    "build_datasets",
    "evaluate",
    "Config",
    "TrainError",
    "train",
    "main",
    "parse_args",
    "GlobalBatchSampler",
    "CheckpointedStages",
    "ModelEma",
    "save_checkpoint",
    "load_checkpoint",
    "resolve_checkpoint",
    "learning_rate",
]
