"""Epochs of batches: seeded orders, even shards, and draws that do not depend on worker count."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from onecycle.batches import EpochLoader, batch_slices, epoch_order, shard
from onecycle.data import DataError, Split
from onecycle.device import Runtime
from onecycle.params import Params
from onecycle.synthetic import synthetic_images

CPU = Runtime(torch.device("cpu"), "fp32", False)


def split(n: int = 300) -> Split:
    return Split(*synthetic_images(n, 0), [str(i) for i in range(10)])


def test_reference_epoch_is_391_batches_with_a_partial_last():
    slices = batch_slices(50_000, 128)
    assert len(slices) == 391 and slices[-1] == slice(49_920, 50_000)


def test_orders_are_seeded_per_epoch():
    assert np.array_equal(epoch_order(100, 1, 3), epoch_order(100, 1, 3))
    assert not np.array_equal(epoch_order(100, 1, 3), epoch_order(100, 1, 4))
    assert np.array_equal(np.sort(epoch_order(100, 1, 3)), np.arange(100))
    assert np.array_equal(epoch_order(5, 1, 0, shuffle=False), np.arange(5))


def test_shards_split_a_global_batch_evenly_and_completely():
    batch = np.arange(10)
    parts = [shard(batch, r, 3) for r in range(3)]
    assert [len(p) for p in parts] == [4, 3, 3]
    assert np.array_equal(np.concatenate(parts), batch)


@pytest.mark.parametrize("backend", ["albumentations", "tensor"])
def test_draws_do_not_depend_on_workers_or_on_the_epochs_before(backend):
    aug = Params().augment
    a = EpochLoader(split(), 64, aug, backend, CPU, 1, num_workers=0)
    b = EpochLoader(split(), 64, aug, backend, CPU, 1, num_workers=2 if backend == "albumentations" else 0)
    first = [list(a.epoch(e)) for e in range(2)]
    resumed = list(b.epoch(1))  # epoch 1 straight away, as a resumed run draws it
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(first[1], resumed))
    assert not torch.equal(first[0][0][0], first[1][0][0])


def test_evaluation_batches_are_in_order_and_only_normalised():
    loader = EpochLoader(split(100), 40, Params().augment, "albumentations", CPU, 1, train=False)
    labels = torch.cat([y for _, y in loader.epoch(0)])
    assert torch.equal(labels, torch.from_numpy(split(100).labels))


def test_too_few_images_for_the_processes_is_a_clear_error():
    with pytest.raises(DataError, match="processes"):
        EpochLoader(split(), 2, Params().augment, "albumentations", CPU, 1, world=4)
