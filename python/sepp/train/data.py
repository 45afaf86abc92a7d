"""The data of a run: seeds derived from the run's position, the sampler of global batches, and the ImageFolder
datasets with their (seeded) augmentation."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterator, List, Tuple

import torch
from torch.utils.data import Dataset, Sampler

from .config import Config, TrainError

__all__ = ["MEAN", "STD", "derive_seed", "GlobalBatchSampler", "AugmentedFolder", "build_datasets"]

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed that is a fixed function of the given integers."""
    digest = hashlib.blake2b(",".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class GlobalBatchSampler(Sampler[int]):
    """This process's images of each global batch, in an order that depends on (seed, epoch) alone.

    The epoch's order is one permutation of the dataset. Step ``s`` consumes the ``global_batch`` images after
    ``start + s * global_batch`` in it: micro-batch ``a`` of process ``r`` is the ``batch_size`` images at offset
    ``(a * world_size + r) * batch_size``. ``start`` is the number of images already consumed in the epoch (a resume);
    an incomplete last global batch is dropped.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        world_size: int,
        rank: int,
        accum_steps: int,
        seed: int,
        epoch: int,
        start: int = 0,
    ) -> None:
        self.n, self.batch_size, self.world_size, self.rank = num_samples, batch_size, world_size, rank
        self.accum_steps, self.seed, self.epoch, self.start = accum_steps, seed, epoch, start
        self.global_batch = batch_size * world_size * accum_steps
        self.steps = max(0, num_samples - start) // self.global_batch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
        order = torch.randperm(self.n, generator=generator).tolist()
        for step in range(self.steps):
            base = self.start + step * self.global_batch
            for a in range(self.accum_steps):
                offset = base + (a * self.world_size + self.rank) * self.batch_size
                yield from order[offset : offset + self.batch_size]

    def __len__(self) -> int:
        return self.steps * self.accum_steps * self.batch_size


class AugmentedFolder(Dataset):
    """An ImageFolder whose random transform draws from a generator seeded by (seed, epoch, index); set ``epoch``
    before each epoch."""

    def __init__(self, folder: Any, transform: Any, seed: int) -> None:
        self.folder, self.transform, self.seed, self.epoch = folder, transform, seed, 0

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        image, label = self.folder[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, self.epoch, index))
            return self.transform(image), label


def _image_folder(root: Path, what: str) -> Any:
    from torchvision.datasets import ImageFolder

    if not root.is_dir():
        raise TrainError(
            f"--data: no {what} folder {str(root)!r} (expected DIR/train and DIR/val, one subfolder per class)"
        )
    try:
        return ImageFolder(str(root))
    except (FileNotFoundError, RuntimeError) as e:  # no class folder / a class folder without images
        raise TrainError(f"--data: {str(root)!r}: {e}") from None


def build_datasets(config: Config) -> Tuple[AugmentedFolder, Any, List[str]]:
    """The training set (random crops and flips, seeded per sample), the validation set (resize and centre crop) and
    the class names."""
    from torchvision import transforms as T

    root = Path(config.data)
    if not root.is_dir():
        raise TrainError(f"--data: no folder {str(root)!r}")
    train_folder, val_folder = _image_folder(root / "train", "train"), _image_folder(root / "val", "val")
    if val_folder.classes != train_folder.classes:
        raise TrainError(
            f"--data: the classes of val/ {val_folder.classes} differ from those of train/ {train_folder.classes}"
        )
    size = config.image_size
    normalize = [T.ToTensor(), T.Normalize(MEAN, STD)]
    train_set = AugmentedFolder(
        train_folder, T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), *normalize]), config.seed
    )
    val_folder.transform = T.Compose([T.Resize(round(size / 0.875)), T.CenterCrop(size), *normalize])
    return train_set, val_folder, train_folder.classes
