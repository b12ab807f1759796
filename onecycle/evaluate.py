"""The test pass and what is read from it: accuracy, loss, per-class accuracy, confusion, mistakes.

`predict` is the one test pass: train_onecycle calls it after every epoch (on this process's
share of the test set, then sums over processes) and the evaluate stage calls it on the whole
test set. Both read loss and accuracy from the same logits in the same way, so the last epoch's
test metrics and metrics/eval.json agree to the last digit on one process.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import nn

from onecycle.device import Runtime


@dataclass
class Predictions:
    """The logits of every image of a test pass, in the order the batches came.

    logits: (N, classes) float32, on the device that computed them.
    labels: (N,) int64, on the same device.
    """

    logits: torch.Tensor
    labels: torch.Tensor

    def loss_sum(self) -> torch.Tensor:
        """Summed cross-entropy of the logits (nats), float64, on the device: ranks add these up."""
        return nn.functional.cross_entropy(self.logits, self.labels, reduction="none").double().sum()

    def correct(self) -> torch.Tensor:
        """Number of images whose largest logit is their label (int64, on the device)."""
        return (self.logits.argmax(1) == self.labels).sum()

    @property
    def loss(self) -> float:
        """Mean cross-entropy (nats) over the images."""
        return float(self.loss_sum()) / len(self.labels)

    @property
    def accuracy(self) -> float:
        """Percent of images predicted right."""
        return 100.0 * int(self.correct()) / len(self.labels)

    @cached_property
    def probs(self) -> np.ndarray:
        """(N, classes) float32 softmax of the logits, on the host."""
        return self.logits.softmax(1).cpu().numpy()

    @cached_property
    def predicted(self) -> np.ndarray:
        """(N,) int64 predicted class of each image, on the host."""
        return self.logits.argmax(1).cpu().numpy()

    @cached_property
    def true(self) -> np.ndarray:
        """(N,) int64 labels on the host."""
        return self.labels.cpu().numpy()


@torch.no_grad()
def predict(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    runtime: Runtime,
    flip: bool = False,
) -> Predictions:
    """The model's logits (in eval mode, under the runtime's autocast) for every batch.

    batches: (images (B, 3, H, W) float on the device, labels (B,) int64), e.g. an evaluation
    EpochLoader's epoch. With `flip`, the logits are averaged over each image and its mirror
    (test-time augmentation by horizontal flip, as airbench averages logits). The model's
    train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for images, y in batches:
        with runtime.autocast():
            out = model(images).float()
            if flip:
                out = (out + model(images.flip(3)).float()) / 2
        logits.append(out)
        labels.append(y)
    model.train(was_training)
    return Predictions(torch.cat(logits), torch.cat(labels))


def per_class_accuracy(pred: Predictions, classes: list[str]) -> dict[str, float | None]:
    """Percent right per class name; None, not NaN, for a class absent from the (sub)set
    (metrics files must stay valid JSON)."""
    return {
        name: float((pred.predicted[pred.true == k] == k).mean() * 100.0) if (pred.true == k).any() else None
        for k, name in enumerate(classes)
    }


def confusion_matrix(pred: Predictions, num_classes: int) -> np.ndarray:
    """(classes, classes) int64 counts[actual, predicted]."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (pred.true, pred.predicted), 1)
    return counts


def confident_mistakes(pred: Predictions, limit: int) -> np.ndarray:
    """Indices of wrong predictions, most confident first, at most `limit`."""
    wrong = np.flatnonzero(pred.predicted != pred.true)
    confidence = pred.probs[wrong, pred.predicted[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")][:limit]
