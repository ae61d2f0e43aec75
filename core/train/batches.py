"""Batches for training and evaluation, cut from the decoded uint8 tensor: oversampling of rare classes and
augmentation on tensors, on the training device.

Cut in the training thread (``num_workers=0``: worker processes would compete with the training threads for
the same two cores). Every random choice comes from a generator seeded by (seed, epoch, batch), so a batch
can be rebuilt exactly: that is what lets a run resume in the middle of an epoch and match an uninterrupted
run.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from core.common.allocator import keep_freed_memory
from core.common.errors import check_choice
from core.train import cache_rows
from core.train.config import AUGMENTS

# Training keeps weights and batches channels_last on every device: on GPUs for tensor cores, and on this 2-core
# CPU with torch 2.14.1 (oneDNN) a training step took 0.80x the time for ResNet-18 at 112 px (batch 64: 0.52 s
# against 0.65 s), 0.60x for MobileNetV2, 0.81x for ResNet-50 and 0.75x for LeNet at 16-32 px, at the same
# results up to float order (measured 2026-12-07; an earlier torch had shown no gain on this CPU).
TRAINING_LAYOUT = torch.channels_last

# A batch cut from a cache larger than this stays on the CPU and is copied to the GPU per batch.
MAX_DEVICE_CACHE_BYTES = 2 * 1024**3

# ---------------------------------------------------------------------------------------------------------------
# Oversampling rare classes


@dataclass
class RareClassSampler:
    """One epoch = every training image once, plus random repeats of rare classes' images.

    A class with fewer than ``rare_threshold`` images is topped up to ``rare_threshold`` draws per epoch (the
    whale report's "classes with fewer than 10 images"). Unlike a weighted random sampler, every image is
    still seen every epoch, and the epoch length is fixed, which the LR schedule and resume rely on.
    """

    labels: torch.Tensor  # class index per training image
    rare_threshold: int
    extra: dict[int, int] = field(init=False)  # class -> repeats added per epoch

    def __post_init__(self) -> None:
        counts = torch.bincount(self.labels).tolist() if len(self.labels) else []
        self.extra = {c: self.rare_threshold - n for c, n in enumerate(counts) if 0 < n < self.rare_threshold}

    def __len__(self) -> int:
        return len(self.labels) + sum(self.extra.values())

    def epoch_order(self, generator: torch.Generator) -> torch.Tensor:
        """Positions into the training images for one epoch, shuffled."""
        parts = [torch.arange(len(self.labels))]
        for cls, n_extra in self.extra.items():
            members = torch.nonzero(self.labels == cls).flatten()
            parts.append(members[torch.randint(len(members), (n_extra,), generator=generator)])
        order = torch.cat(parts)
        return order[torch.randperm(len(order), generator=generator)]


def weighted_sampler(labels: torch.Tensor, rare_threshold: int) -> RareClassSampler | None:
    """A sampler that oversamples classes below ``rare_threshold`` images; None when no class is that rare."""
    sampler = RareClassSampler(labels, rare_threshold)
    return sampler if sampler.extra else None


# ---------------------------------------------------------------------------------------------------------------
# Augmentation on batched tensors (per sample, on the device)


def augment_batch(x: torch.Tensor, mode: str, generator: torch.Generator) -> torch.Tensor:
    """Augment a float batch (``N x 3 x S x S``, values 0..1); each sample gets its own random draw.

    Modes: ``flip`` (mirror left-right), ``crop`` (shift by up to S/8 px, reflect-padded: the tensor form of
    ``RandomCrop(S, padding=S/8)``), ``crop-flip`` (both), ``strong`` (both, plus rotation up to 15 degrees,
    scaling 0.9-1.1 and brightness/contrast/saturation jitter of 20%). torchvision's v2 transforms draw one
    random parameter per call, i.e. one per *batch*; these draw one per sample, vectorised.
    """
    check_choice("augment", mode, AUGMENTS)
    if mode in ("crop", "crop-flip", "strong"):
        x = random_translate(x, max(1, x.shape[-1] // 8), generator)
    if mode in ("flip", "crop-flip", "strong"):
        x = random_flip(x, generator)
    if mode == "strong":
        x = colour_jitter(random_affine(x, generator), generator)
    return x


def _uniform(n: int, low: float, high: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return (torch.rand(n, generator=generator) * (high - low) + low).to(device, non_blocking=True)


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = (torch.rand(len(x), generator=generator) < 0.5).to(x.device, non_blocking=True)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def random_translate(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by its own (dy, dx) in [-pad, pad], filling the border by reflection."""
    n, c, h, w = x.shape
    pad = min(pad, h - 1, w - 1)
    if pad < 1:
        return x
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n), generator=generator).to(x.device, non_blocking=True)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def random_affine(x: torch.Tensor, generator: torch.Generator, degrees: float = 15.0) -> torch.Tensor:
    """Rotate by up to ``degrees`` and scale by 0.9-1.1, each sample its own, via one ``grid_sample``."""
    n = len(x)
    angle = _uniform(n, -math.radians(degrees), math.radians(degrees), generator, x.device)
    scale = _uniform(n, 0.9, 1.1, generator, x.device)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def colour_jitter(x: torch.Tensor, generator: torch.Generator, strength: float = 0.2) -> torch.Tensor:
    """Brightness, contrast and saturation factors in [1 - strength, 1 + strength], per sample."""
    n = len(x)
    low, high = 1 - strength, 1 + strength
    brightness, contrast, saturation = (_uniform(n, low, high, generator, x.device)[:, None, None, None]
                                        for _ in range(3))  # fmt: skip
    x = x * brightness
    grey = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    x = (x - grey.mean(dim=(2, 3), keepdim=True)) * contrast + grey.mean(dim=(2, 3), keepdim=True)
    x = (x - grey) * saturation + grey
    return x.clamp(0, 1)


# ---------------------------------------------------------------------------------------------------------------
# Batches


def batch_seed(seed: int, epoch: int, batch: int) -> int:
    """The seed of one batch's random draws: any batch of any epoch can be rebuilt exactly (mid-epoch resume)."""
    return (seed * 1_000_003 + epoch * 100_003 + batch) % (2**63)


class Batches:
    """Batches of one split, cut from the uint8 cache, moved to the device, augmented and normalised there.

    On CUDA the whole cache is copied to the GPU once when it fits (``MAX_DEVICE_CACHE_BYTES``), so a batch
    is one index on the device; otherwise each batch goes over with ``non_blocking`` from pinned memory.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        indices: np.ndarray | torch.Tensor,
        *,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device | str = "cpu",
        augment: str = "none",
        shuffle: bool = False,
        sampler: RareClassSampler | None = None,
        seed: int = 0,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        keep_freed_memory()  # every pass over the data allocates the same tensors each step: reuse, not re-fault
        self.device = torch.device(device)
        self.shard = shard  # (rank, world): this process's part of every epoch under torch.distributed
        self.indices = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        self.images, self.labels, self.indices = _place(images, labels, self.indices, self.device)
        self.batch_size, self.augment, self.shuffle, self.sampler, self.seed = (
            batch_size,
            augment,
            shuffle,
            sampler,
            seed,
        )
        # Normalising as (x - 255 mean) / (255 std) on the uint8 values saves one pass over the batch.
        self.shift = torch.tensor(mean, dtype=torch.float32, device=self.device).mul(255).view(1, 3, 1, 1)
        self.scale = torch.tensor(std, dtype=torch.float32, device=self.device).mul(255).reciprocal().view(1, 3, 1, 1)

    @property
    def n_samples(self) -> int:
        """Samples per epoch of this process (oversampled repeats included; its shard under torch.distributed)."""
        n = len(self.sampler) if self.sampler is not None else len(self.indices)
        rank, world = self.shard
        if world == 1:
            return n
        return -(-n // world) if self.shuffle else len(range(rank, n, world))

    def __len__(self) -> int:
        n = self.n_samples
        # Training drops a last batch of one image: BatchNorm cannot normalise a single sample.
        return n // self.batch_size + (1 if n % self.batch_size > (1 if self.shuffle else 0) else 0)

    def epoch(self, epoch: int = 0, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) batches of one epoch, starting at batch ``start_batch`` (for a mid-epoch resume)."""
        order = self._order(epoch)
        generator = torch.Generator()
        rank = self.shard[0]
        for b in range(start_batch, len(self)):
            rows = self.indices[order[b * self.batch_size : (b + 1) * self.batch_size]]
            generator.manual_seed(batch_seed(self.seed, epoch, b) + rank)  # each rank its own augmentation draws
            yield self._batch(rows, generator)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch(0)

    def _order(self, epoch: int) -> torch.Tensor:
        order = self._full_order(epoch)
        rank, world = self.shard
        if world == 1:
            return order
        if self.shuffle:  # training: the same number of batches on every rank, or the others wait forever
            order = torch.cat([order, order[: (-len(order)) % world]])
        return order[rank::world]  # the same permutation everywhere (same seed), a different slice each

    def _full_order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(len(self.indices))
        generator = torch.Generator().manual_seed(batch_seed(self.seed, epoch, -1))
        if self.sampler is not None:
            return self.sampler.epoch_order(generator)
        return torch.randperm(len(self.indices), generator=generator)

    def _batch(self, rows: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        rows = rows.to(self.images.device, non_blocking=True)
        x, y = cache_rows.gather(self.images, rows), self.labels.index_select(0, rows)  # pread from a cache file
        if x.device != self.device:  # a CPU cache feeding a GPU: pinned pages let the copy run asynchronously
            x, y = x.pin_memory().to(self.device, non_blocking=True), y.pin_memory().to(self.device, non_blocking=True)
        if self.augment != "none":
            x = augment_batch(x.float().div_(255), self.augment, generator).mul_(255)
        x = (x - self.shift).mul_(self.scale)
        return x.contiguous(memory_format=TRAINING_LAYOUT), y


def _place(
    images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where batches are cut from: the shared CPU cache, or this split's images copied to the GPU once."""
    if device.type == "cpu":
        return images, labels, indices
    if len(indices) * images[0].numel() <= MAX_DEVICE_CACHE_BYTES:
        mine = indices.to(images.device)
        return cache_rows.gather(images, mine).to(device), labels[mine].to(device), torch.arange(len(indices))
    return images, labels, indices  # too large for the GPU: each batch is pinned and copied (see _batch)
