"""Epochs of batches: shuffling, sharding across processes, and where augmentation runs.

Every random draw of an epoch (the order and each batch's augmentation) is derived from
(seed, epoch, batch), never from a running generator. So a run resumed at epoch k draws
exactly what an uninterrupted run draws, and the draws do not depend on the number of
DataLoader workers.

Under DDP the global batch keeps its meaning: global batch i is the same images whatever
the process count, split across ranks, so the number of optimizer steps per epoch and the
schedule do not change with the number of processes.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from onecycle import augment
from onecycle.data import DataError, Split
from onecycle.device import Runtime
from onecycle.params import AugmentParams


def batch_seed(seed: int, epoch: int, batch: int, rank: int = 0) -> int:
    """A 63-bit seed that differs for every (seed, epoch, batch, rank)."""
    return int(np.random.SeedSequence([seed, epoch, batch, rank]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The image order of one epoch: a permutation seeded by (seed, epoch), or 0..n-1."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([seed, epoch]).permutation(n)


def batch_slices(n: int, batch_size: int) -> list[slice]:
    """Global batches of `batch_size`, the last one partial (as the reference: 391 batches of 50,000)."""
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def shard(indices: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This rank's contiguous share of a global batch (sizes differ by at most one image)."""
    return np.array_split(indices, world)[rank]


class EpochLoader:
    """Yields (images float NCHW on the device, labels int64 on the device) for one epoch.

    Args:
        split: the images (uint8 NHWC) and labels.
        batch_size: global images per optimizer step.
        aug: the augmentation recipe; evaluation reads only its mean and std.
        backend: where training batches are augmented: "albumentations" (per image, on the CPU) or
            "tensor" (batched, on the device). Unused (None) for evaluation, which only normalizes.
        runtime: where the batches go.
        seed: the run's seed.
        train: augment and shuffle anew each epoch (training), or normalize only, in the stored
            order (evaluation).
        rank, world: this process and the number of processes (DDP).
        num_workers: DataLoader workers for the albumentations backend (0: in this process).
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        aug: AugmentParams,
        backend: str | None,
        runtime: Runtime,
        seed: int,
        train: bool = True,
        rank: int = 0,
        world: int = 1,
        num_workers: int = 0,
    ) -> None:
        if len(split.labels) < world or batch_size < world:
            raise DataError(
                f"{len(split.labels)} images in batches of {batch_size} cannot be shared among {world} processes: "
                "use more images, a larger train.batch_size or fewer processes"
            )
        self.split, self.batch_size, self.aug, self.runtime = split, batch_size, aug, runtime
        self.seed, self.train, self.rank, self.world = seed, train, rank, world
        self.backend = backend
        self.num_workers = num_workers
        self._workers: torch.utils.data.DataLoader | None = None
        self.slices = batch_slices(len(split.labels), batch_size)
        if world > 1 and (len(split.labels) % batch_size) and (len(split.labels) % batch_size) < world:
            self.slices = self.slices[:-1]  # a last global batch smaller than the process count cannot be split
        self.labels = torch.from_numpy(split.labels)
        # On a GPU the whole prepared split lives there as uint8 (150 MB for CIFAR-10 train):
        # batches are gathered, augmented and normalised on the device, with no copy per step.
        self.tensor_aug = augment.TensorAugment(aug) if train and backend == "tensor" else None
        self.albu = augment.AlbumentationsBatch(aug, seed) if train and backend == "albumentations" else None
        self.resident = self.tensor_aug is not None or (not train and runtime.device.type == "cuda")
        if self.resident:
            self.device_images = torch.from_numpy(split.images).to(runtime.device)
            self.device_labels = self.labels.to(runtime.device)

    def __len__(self) -> int:
        return len(self.slices)

    @property
    def num_images(self) -> int:
        """Images this rank sees per epoch."""
        order = np.arange(len(self.split.labels))
        return sum(len(shard(order[s], self.rank, self.world)) for s in self.slices)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = epoch_order(len(self.split.labels), self.seed, epoch, shuffle=self.train)
        batches = [shard(order[s], self.rank, self.world) for s in self.slices]
        if self.resident:
            yield from self._device_batches(epoch, batches)
        elif self.num_workers > 0:
            yield from self._worker_batches(epoch, batches)
        else:
            for b, idx in enumerate(batches):
                yield self._to_device(*self._cpu_batch(epoch, b, idx))

    def _cpu_batch(self, epoch: int, b: int, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        images = self.split.images[idx]
        if self.albu is not None:
            self.albu.reseed(batch_seed(self.seed, epoch, b, self.rank))
            x = self.albu(images)
        else:
            x = augment.normalize_batch(images, self.aug.mean, self.aug.std)
        return x, self.labels[idx]

    def _to_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.runtime.to_input(x), y.to(self.runtime.device, non_blocking=True)

    def _device_batches(self, epoch: int, batches: list[np.ndarray]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator(device=self.runtime.device) if self.tensor_aug is not None else None
        # One host-to-device copy of the epoch's order, then slices of it: no copy per step.
        order = torch.from_numpy(np.concatenate(batches)).to(self.runtime.device)
        bounds = np.cumsum([0] + [len(idx) for idx in batches])
        for b in range(len(batches)):
            if generator is not None:
                generator.manual_seed(batch_seed(self.seed, epoch, b, self.rank))
            index = order[bounds[b] : bounds[b + 1]]
            if self.tensor_aug is not None:
                x = self.tensor_aug(self.device_images[index], generator)
            else:
                x = augment.normalize_batch(self.device_images[index], self.aug.mean, self.aug.std)
            yield self.runtime.to_input(x), self.device_labels[index]

    def _worker_batches(self, epoch: int, batches: list[np.ndarray]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._workers is None:
            # Created once and kept (persistent workers): starting processes every epoch costs seconds.
            self._sampler = _EpochSampler(len(batches))
            self._workers = torch.utils.data.DataLoader(
                _Batches(self),
                batch_size=None,  # each item is already a whole batch
                sampler=self._sampler,
                num_workers=self.num_workers,
                pin_memory=self.runtime.device.type == "cuda",
                prefetch_factor=4,
                persistent_workers=True,
            )
        self._sampler.epoch = epoch
        for x, y in self._workers:
            yield self._to_device(x, y)

    def batch_indices(self, epoch: int, b: int) -> np.ndarray:
        """This rank's images of global batch b of `epoch` (what a worker process recomputes)."""
        order = epoch_order(len(self.split.labels), self.seed, epoch, shuffle=self.train)
        return shard(order[self.slices[b]], self.rank, self.world)


class _EpochSampler(torch.utils.data.Sampler):
    """Yields (epoch, batch) keys in the main process; the workers build the batches."""

    def __init__(self, num_batches: int) -> None:
        self.num_batches, self.epoch = num_batches, 0

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(self.epoch, b) for b in range(self.num_batches)])


class _Batches(torch.utils.data.Dataset):
    """Batch (epoch, b), built in a worker process; each batch seeds its own draws."""

    def __init__(self, loader: EpochLoader) -> None:
        self.loader = loader

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, b = key
        return self.loader._cpu_batch(epoch, b, self.loader.batch_indices(epoch, b))
