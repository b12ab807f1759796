"""Evaluation of a trained model: accuracy, loss, per-class accuracy, confusion, TTA, mistakes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from onecycle.augment import normalize_batch
from onecycle.data import Split
from onecycle.device import Runtime


@dataclass
class Predictions:
    probs: np.ndarray  # N x classes, softmax of the logits (float32)
    labels: np.ndarray  # N true labels

    @property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(1)

    @property
    def accuracy(self) -> float:
        return float((self.predicted == self.labels).mean() * 100.0)

    @property
    def loss(self) -> float:
        """Mean cross-entropy (nats) of the predicted probabilities."""
        p = self.probs[np.arange(len(self.labels)), self.labels]
        return float(-np.log(np.clip(p, 1e-12, None)).mean())


@torch.no_grad()
def predict(
    model: nn.Module, split: Split, runtime: Runtime, batch_size: int, mean, std, flip: bool = False
) -> Predictions:
    """Class probabilities for every image; with `flip`, averaged over the image and its mirror."""
    model.eval()
    out = []
    for start in range(0, len(split.labels), batch_size):
        x = runtime.to_input(normalize_batch(split.images[start : start + batch_size], mean, std))
        with runtime.autocast():
            probs = model(x).float().softmax(1)
            if flip:
                probs = (probs + model(x.flip(3)).float().softmax(1)) / 2
        out.append(probs.cpu())
    return Predictions(torch.cat(out).numpy(), split.labels)


def per_class_accuracy(pred: Predictions, classes: list[str]) -> dict[str, float | None]:
    predicted = pred.predicted
    return {
        # None, not NaN, for a class absent from the (sub)set: metrics files must stay valid JSON.
        name: float((predicted[pred.labels == k] == k).mean() * 100.0) if (pred.labels == k).any() else None
        for k, name in enumerate(classes)
    }


def confusion_matrix(pred: Predictions, num_classes: int) -> np.ndarray:
    """counts[actual, predicted]."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (pred.labels, pred.predicted), 1)
    return counts


def confident_mistakes(pred: Predictions, limit: int) -> np.ndarray:
    """Indices of wrong predictions, most confident first."""
    wrong = np.flatnonzero(pred.predicted != pred.labels)
    confidence = pred.probs[wrong, pred.predicted[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")][:limit]
