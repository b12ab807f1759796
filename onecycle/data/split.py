"""What every data module shares: the in-memory split, the image geometry, and the data error."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onecycle.errors import UserError

SIZE = 32  # CIFAR images are 32x32 pixels
SPLITS = ("train", "test")


class DataError(UserError):
    """The data source is missing, damaged, unsafe or not laid out as expected; the message says what to do."""


@dataclass(frozen=True, eq=False)  # eq=False: comparing arrays elementwise has no single truth value
class Split:
    images: np.ndarray  # uint8, N x 32 x 32 x 3, RGB (NHWC)
    labels: np.ndarray  # int64, N, index into classes
    classes: list[str]
