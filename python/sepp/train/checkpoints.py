"""Checkpoints and logs of a run.

A checkpoint is a folder ``OUTPUT/checkpoints/step-NNNNNNNN`` holding ``model.safetensors`` (and ``ema.safetensors``)
and ``state.pt`` (optimizer, scaler, position, schedule; tensors and plain values only, read back with
``torch.load(weights_only=True)``). ``checkpoints/latest`` names the newest. The logs are CSV files with a header,
one row per logged step or epoch.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..files import fsync_dir, umask, write_atomic
from ..weights import load_tensors, save_tensors
from .config import TrainError

__all__ = [
    "CHECKPOINT_FORMAT",
    "save_checkpoint",
    "resolve_checkpoint",
    "load_checkpoint",
    "restore_checkpoint",
    "CsvLog",
    "STEP_COLUMNS",
    "EPOCH_COLUMNS",
]

CHECKPOINT_FORMAT = "sepp.train/1"
STEP_COLUMNS = ("step", "epoch", "loss", "lr", "images_per_s")
EPOCH_COLUMNS = (
    "epoch",
    "step",
    "lr",
    "train_loss",
    "val_loss",
    "val_top1",
    "val_top5",
    "ema_val_top1",
    "ema_val_top5",
    "images_per_s",
    "seconds",
)


def save_checkpoint(
    root: Path, step: int, model: nn.Module, ema: Optional[nn.Module], state: Dict[str, Any], keep: int = 0
) -> Path:
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
        tmp.chmod(0o777 & ~umask())
        save_tensors(model.state_dict(), tmp / "model.safetensors")
        if ema is not None:
            save_tensors(ema.state_dict(), tmp / "ema.safetensors")
        buffer = io.BytesIO()
        torch.save(state, buffer)
        write_atomic(tmp / "state.pt", buffer.getvalue())
        os.rename(tmp, final)
        fsync_dir(root)
        write_atomic(root / "latest", f"{final.name}\n".encode())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep:  # the newest `keep` up to this one; later ones (a resume from an older checkpoint) are left alone
        older = sorted(p for p in root.glob("step-*") if p.is_dir() and p.name < final.name)
        for old in older[: max(0, len(older) - (keep - 1))]:
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
    raise TrainError(
        f"--resume {path}: no checkpoint there (expected a folder with state.pt, or a run's --output "
        f"with checkpoints/latest)"
    )


def _read_tensors(path: Path) -> Dict[str, torch.Tensor]:
    try:
        return load_tensors(path)
    except ValueError as e:
        raise TrainError(f"--resume: {str(e).splitlines()[0]}") from None


def load_checkpoint(folder: Path) -> Tuple[Dict[str, torch.Tensor], Optional[Dict[str, torch.Tensor]], Dict[str, Any]]:
    """(model tensors, EMA tensors or None, state) of a checkpoint folder; raises TrainError naming the bad file.
    ``state.pt`` is read with ``weights_only=True``: no pickled object is ever run."""
    try:
        state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: zipfile, pickle and EOF errors alike
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise TrainError(
            f"--resume: {str(folder / 'state.pt')!r} is not a readable checkpoint state: {first}"
        ) from None
    keys = ("model", "classes", "epoch", "epoch_samples", "step", "optimizer", "scaler")
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or any(k not in state for k in keys):
        raise TrainError(f"--resume: {str(folder / 'state.pt')!r} is not a sepp.train checkpoint state")
    ema = _read_tensors(folder / "ema.safetensors") if (folder / "ema.safetensors").exists() else None
    return _read_tensors(folder / "model.safetensors"), ema, state


def restore_checkpoint(
    folder: Path,
    model: nn.Module,
    ema: Optional[nn.Module],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    model_name: str,
    classes: List[str],
) -> Dict[str, Any]:
    """Loads a checkpoint into the model, the EMA's module (None when there is no EMA), the optimizer and the scaler,
    after checking that all of it fits: a failed resume changes nothing. Returns the checkpoint's state."""
    tensors, ema_tensors, state = load_checkpoint(folder)
    if state["model"] != model_name or state["classes"] != classes:
        raise TrainError(
            f"--resume: {folder} is a checkpoint of {state['model']} on classes {state['classes']}, "
            f"not of {model_name} on {classes}"
        )
    _check_fits(model, tensors, folder / "model.safetensors")
    if ema is not None:
        if ema_tensors is None:
            raise TrainError(f"--resume: {folder} has no ema.safetensors, and --ema is on")
        _check_fits(ema, ema_tensors, folder / "ema.safetensors")
    try:
        optimizer.load_state_dict(state["optimizer"])  # checks the parameter groups before changing anything
        scaler.load_state_dict(state["scaler"])
    except (ValueError, KeyError, RuntimeError) as e:
        raise TrainError(f"--resume: {folder / 'state.pt'}: the optimizer state does not fit the model: {e}") from None
    with torch.no_grad():
        for module, values in ((model, tensors), (ema, ema_tensors)):
            if module is not None:
                for k, v in module.state_dict().items():
                    v.copy_(values[k])
    return state


def _check_fits(model: nn.Module, tensors: Dict[str, torch.Tensor], path: Path) -> None:
    own = model.state_dict()
    if set(own) != set(tensors) or any(own[k].shape != tensors[k].shape for k in own):
        raise TrainError(f"--resume: {str(path)!r} does not match the model (names or shapes differ)")


class CsvLog:
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
        write_atomic(self.path, text.getvalue().encode())

    def write(self, row: Dict[str, Any]) -> None:
        new = not self.path.exists()
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, self.columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
