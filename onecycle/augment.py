"""Train-time augmentation built from `params.yaml` (`augment:`), in two interchangeable backends.

- albumentations: `augment.train` is a list of albumentations 2.x transforms by name with their
  arguments, applied image by image (the reference's way, any transform). `AlbumentationsBatch`
  runs it over a batch.
- tensor: `TensorAugment` runs the same recipe batched on the device the images are on (pad-crop,
  flip, cutout only), with the same distributions as albumentations 2.0.8, so the CPU never becomes
  the bottleneck of a GPU run.

Both take the same input and give the same output:

    uint8  N,H,W,C  (RGB, the layout images are stored and decoded in: the data stays 1 byte a
                     value until the last step, 4x less to move to the device than float32)
      -> float32 N,C,H,W  contiguous, normalized (x / 255 - mean) / std per channel

NCHW is the layout every torch model accepts; the trainer converts to channels_last if it wants
(one copy). The transforms work on raw pixel values (a cutout fill of 0 is black, as in
albumentations); Normalize is always last and is appended here, never listed in `augment.train`.

String conveniences in the arguments: `border_mode: reflect | reflect_101 | reflect101 | symmetric
| constant | replicate | wrap` (`reflect` is OpenCV's BORDER_REFLECT_101, `dcb|abcd|cba`, which is
numpy's and torch's "reflect"; `symmetric` is OpenCV's BORDER_REFLECT, `cba|abcd|dcb`), and
`interpolation` / `mask_interpolation: nearest | linear | cubic | area | lanczos4`; YAML lists become
tuples.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch

from onecycle.errors import UserError
from onecycle.params import BACKENDS as BACKEND_CHOICES
from onecycle.params import AugmentParams, shown

log = logging.getLogger(__name__)

BACKENDS = tuple(b for b in BACKEND_CHOICES if b != "auto")  # what "auto" resolves to
FIX_HINT = "fix augment.train in params.yaml"

BORDER_MODES = {
    "constant": cv2.BORDER_CONSTANT,
    "replicate": cv2.BORDER_REPLICATE,
    "reflect": cv2.BORDER_REFLECT_101,  # dcb|abcd|cba: numpy/torch "reflect", the edge pixel not repeated
    "reflect_101": cv2.BORDER_REFLECT_101,
    "reflect101": cv2.BORDER_REFLECT_101,
    "symmetric": cv2.BORDER_REFLECT,  # cba|abcd|dcb: numpy "symmetric", the edge pixel repeated
    "wrap": cv2.BORDER_WRAP,
}
INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "lanczos4": cv2.INTER_LANCZOS4,
}
APPENDED_BY_CODE = {
    "Normalize": "Normalize is appended from augment.mean and augment.std",
    "ToTensorV2": "the conversion to a tensor is done by the code",
}


class AugmentError(UserError):
    """`augment.train` names an unknown transform, gives it bad arguments, or asks the tensor
    backend for a transform it does not implement."""


# ----------------------------------------------------------------------------- albumentations


def build_albumentations(aug: AugmentParams, seed: int | None) -> A.Compose:
    """The per-image pipeline: `aug.train` in order, then Normalize(mean, std, max_pixel_value=255).

    Call it as `pipeline(image=hwc_uint8_rgb)["image"]`, which gives an H,W,C float32 array.
    With an integer `seed` the draws are reproducible for a given sequence of calls; with None they
    are not. Raises AugmentError naming the transform on an unknown name or bad arguments.
    """
    transforms = [_make_transform(i, item) for i, item in enumerate(aug.train)]
    transforms.append(A.Normalize(mean=aug.mean, std=aug.std, max_pixel_value=255.0))
    pipeline = A.Compose(transforms, seed=seed)
    reseed_pipeline(pipeline, seed)
    return pipeline


def reseed_pipeline(pipeline: A.Compose, seed: int | None) -> None:
    """Restart the random streams of `pipeline` from `seed`, one independent stream per transform.

    albumentations 2.0.8's `Compose(seed=s)` gives every transform its own `random.Random(s)` and
    `default_rng(s)` with the *same* s, so different transforms read the same numbers (the first
    flip decision equals the first cutout decision and the first crop offset's draw). Seeding each
    transform from a spawned `SeedSequence` keeps the streams reproducible and independent.
    """
    pipeline.set_random_seed(seed)
    if seed is None:
        return
    children = np.random.SeedSequence(seed).spawn(len(pipeline.transforms))
    for transform, child in zip(pipeline.transforms, children):
        transform.set_random_seed(int(child.generate_state(1)[0]))


class AlbumentationsBatch:
    """Applies the albumentations pipeline image by image to a batch (the reference's way).

    Args:
        aug: the `augment` params section.
        seed: seeds the draws; the same seed and the same sequence of calls give the same output.
            Call `reseed(seed + epoch)` at the start of each epoch so a resumed run draws as an
            uninterrupted one would. A copy in each DataLoader worker must get its own seed.
    """

    def __init__(self, aug: AugmentParams, seed: int | None) -> None:
        self.pipeline = build_albumentations(aug, seed)

    def reseed(self, seed: int | None) -> None:
        reseed_pipeline(self.pipeline, seed)

    def __call__(self, images: np.ndarray) -> torch.Tensor:
        """uint8 N,H,W,C numpy array -> float32 N,C,H,W contiguous tensor (CPU)."""
        images = _as_uint8_nhwc_numpy(images)
        out = None
        for i, image in enumerate(images):
            result = self.pipeline(image=image)["image"]
            if out is None:
                out = np.empty((len(images), *result.shape), dtype=np.float32)
            out[i] = result
        if out is None:
            out = np.empty((0, *images.shape[1:]), dtype=np.float32)
        return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _make_transform(index: int, item: dict) -> A.BasicTransform:
    ((name, args),) = item.items()
    where = f"augment.train[{index}] {str(name)[:60]}"
    cls = getattr(A, str(name), None) if not str(name).startswith("_") else None
    if not (isinstance(cls, type) and issubclass(cls, (A.BasicTransform, A.BaseCompose))):
        known = [n for n, v in vars(A).items() if isinstance(v, type) and issubclass(v, A.BasicTransform)]
        close = difflib.get_close_matches(str(name), known, n=3)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise AugmentError(f"{where}: not an albumentations {A.__version__} transform{hint} ({FIX_HINT})")
    if issubclass(cls, A.BaseCompose):
        raise AugmentError(
            f"{where}: compositions cannot be nested in augment.train; list the transforms themselves ({FIX_HINT})"
        )
    if name in APPENDED_BY_CODE:
        raise AugmentError(f"{where}: {APPENDED_BY_CODE[name]}; remove it ({FIX_HINT})")
    named = [key for key in (args or {}) if not isinstance(key, str)]
    if named:
        raise AugmentError(f"{where}: argument names are words, got {shown(named[0], 60)} ({FIX_HINT})")
    kwargs = {key: _convert_arg(where, key, value) for key, value in (args or {}).items()}
    allowed = _argument_names(cls)
    if allowed is not None:
        unknown = sorted(set(kwargs) - allowed)
        if unknown:
            raise AugmentError(
                f"{where}: unknown argument {shown(unknown[0], 60)}; "
                f"its arguments are {', '.join(sorted(allowed))} ({FIX_HINT})"
            )
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:  # pydantic's ValidationError is a ValueError
        raise AugmentError(f"{where}: {_describe_error(err)} ({FIX_HINT})") from err


def _argument_names(cls: type) -> set[str] | None:
    """Keyword arguments `cls` accepts, or None when it takes **kwargs (albumentations checks those)."""
    params = inspect.signature(cls.__init__).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.name != "self"}


def _convert_arg(where: str, key: str, value: Any) -> Any:
    if isinstance(value, str) and key.endswith("border_mode"):
        return _lookup(where, key, value, BORDER_MODES)
    if isinstance(value, str) and key.endswith("interpolation"):
        return _lookup(where, key, value, INTERPOLATIONS)
    if isinstance(value, list):
        return tuple(_convert_arg(where, key, v) for v in value)
    return value


def _lookup(where: str, key: str, value: str, table: dict[str, int]) -> int:
    try:
        return table[value.lower()]
    except KeyError:
        raise AugmentError(
            f"{where}: {key} must be one of {', '.join(table)} (or an OpenCV constant), got {shown(value)} ({FIX_HINT})"
        ) from None


def _describe_error(err: Exception) -> str:
    """One line per bad field for pydantic errors (albumentations re-raises them as ValueError)."""
    source = err.__cause__ if callable(getattr(err.__cause__, "errors", None)) else err
    errors = getattr(source, "errors", None)
    if callable(errors):  # pydantic: one line per field
        try:
            items = errors()
        except Exception:  # noqa: BLE001 - fall back to the plain message
            items = None
        if items:
            parts = []
            for e in items:
                field = ".".join(str(x) for x in e.get("loc", ())) or "arguments"
                got = "" if e.get("type") == "missing" or not e.get("loc") else f" (got {shown(e.get('input'))})"
                parts.append(f"{field}: {e.get('msg')}{got}")
            return "; ".join(parts)
    return str(err)


# ----------------------------------------------------------------------------- choosing, validating


def resolve_backend(aug_backend: str, train: Sequence[dict]) -> str:
    """'albumentations' or 'tensor' for `augment.backend` and the recipe `train`.

    'auto' is 'tensor' whenever the recipe is one the tensor backend runs (pad-crop, flip,
    cutout), on every device: on a GPU the per-image CPU pipeline would starve it, and on the
    CPU the batched version is ~3x faster and leaves the cores to the step (benchmarks/RESULTS.md).
    Any other recipe falls back to 'albumentations'.
    """
    if aug_backend in BACKENDS:
        return aug_backend
    if aug_backend != "auto":
        raise AugmentError(f"augment.backend must be auto, {' or '.join(BACKENDS)}; got {aug_backend!r}")
    try:
        _tensor_ops(build_albumentations(AugmentParams(train=tuple(train)), seed=0))
    except AugmentError as err:
        log.warning("augment.backend auto: using albumentations because %s", err)
        return "albumentations"
    return "tensor"


def validate(aug: AugmentParams, backend: str | None = None, image_shape: tuple[int, int, int] = (32, 32, 3)) -> None:
    """Check the recipe before any work, so that it cannot fail or exhaust memory mid-run: AugmentError
    naming the transform and the problem.

    1. Build it (unknown transforms or arguments; for backend 'tensor', transforms it lacks).
    2. Without running anything, bound the size of every image each transform can make from
       `image_shape` (check_sizes): over MAX_AUGMENT_PIXELS, or a crop or hole larger than its
       image, is refused.
    3. Run every transform with its probability forced to 1, DRAWS times, in both backends: a step
       that fails only when drawn (a CoarseDropout hole larger than the image at p 0.5) fails
       here, and one that changes the size only some of the time is refused; the result must be
       `image_shape` again (the network's input).
    """
    pipeline = build_albumentations(aug, seed=0)
    if (backend or aug.backend) == "tensor":
        _tensor_ops(pipeline)
    check_sizes(pipeline, image_shape)
    forced = always_applied(aug)
    _exercise_albumentations(build_albumentations(forced, seed=0), pipeline, image_shape)
    if (backend or aug.backend) == "tensor":
        _exercise_tensor(forced, image_shape)


MAX_AUGMENT_PIXELS = 1024 * 1024  # per image, at any step of the recipe (and inside a step): 3 MiB as uint8,
# 12 MiB as float32, 384 MiB for a batch of 128 on the tensor backend; 32x32 times 32 a side, room for any real
# recipe. Resize to 30000x30000 (2.7 GB) had the out-of-memory killer end the stage.
DRAWS = 8  # runs of the forced recipe: random sizes and offsets get several draws each, at ~1 ms a run


def always_applied(aug: AugmentParams) -> AugmentParams:
    """`aug` with every transform's p set to 1: the recipe validate runs, so that no step escapes the check."""
    train = tuple({name: {**(args or {}), "p": 1.0}} for item in aug.train for name, args in item.items())
    return dataclasses.replace(aug, train=train)


def check_sizes(pipeline: A.Compose, image_shape: tuple[int, ...]) -> None:
    """Bound, without running anything, the largest image each transform of `pipeline` (but the last,
    Normalize) can make, starting from `image_shape`; AugmentError at the first over MAX_AUGMENT_PIXELS
    or that does not fit its image (a crop or hole larger than it)."""
    h, w = image_shape[:2]
    for index, transform in enumerate(pipeline.transforms[:-1]):
        where = f"augment.train[{index}] {type(transform).__name__}"
        out_h, out_w, inside = size_bound(transform, h, w, where)
        largest = max(out_h * out_w, inside)
        if not largest <= MAX_AUGMENT_PIXELS:  # NaN-safe: a NaN argument is refused too
            raise AugmentError(
                f"{where} would make images of up to {_pixels(largest)} pixels from {h}x{w} ones "
                f"({_side(out_h)}x{_side(out_w)} out); the limit is {MAX_AUGMENT_PIXELS:,} pixels (1024x1024) per "
                f"image at any step, so that augmentation cannot exhaust memory ({FIX_HINT})"
            )
        h, w = math.ceil(out_h), math.ceil(out_w)


def _exercise_albumentations(forced: A.Compose, pipeline: A.Compose, image_shape: tuple[int, int, int]) -> None:
    """Run each forced transform in turn, DRAWS times, from a blank image (see validate)."""
    for _ in range(DRAWS):
        image = np.zeros(image_shape, np.uint8)
        for index, (transform, original) in enumerate(zip(forced.transforms, pipeline.transforms)):
            name = type(transform).__name__
            where = "augment.train" if index == len(forced.transforms) - 1 else f"augment.train[{index}] {name}"
            try:
                out = transform(image=image)["image"]
            except Exception as err:  # albumentations raises its own errors (CropSizeError, ValueError...)
                raise AugmentError(
                    f"{where} fails on a {image.shape[0]}x{image.shape[1]} image: {_cut(err)} ({FIX_HINT})"
                ) from err
            if out.shape[:2] != image.shape[:2] and original.p < 1:
                raise AugmentError(
                    f"{where} turns {image.shape[0]}x{image.shape[1]} images into {out.shape[0]}x{out.shape[1]} "
                    f"only with probability p={original.p:g}: images of one batch must have one size; "
                    f"set p: 1 ({FIX_HINT})"
                )
            image = out
        if image.shape != image_shape:
            raise AugmentError(
                f"augment.train turns {image_shape[0]}x{image_shape[1]} images into {image.shape[0]}x{image.shape[1]}: "
                f"the network needs {image_shape[0]}x{image_shape[1]} ({FIX_HINT})"
            )


def _exercise_tensor(forced: AugmentParams, image_shape: tuple[int, int, int]) -> None:
    """Run the forced recipe on the tensor backend, one batch of DRAWS blank images (each draws its own)."""
    generator = torch.Generator().manual_seed(0)
    try:
        out = TensorAugment(forced)(torch.zeros((DRAWS, *image_shape), dtype=torch.uint8), generator)
    except AugmentError:
        raise
    except Exception as err:  # torch's own, e.g. "random_ expects 'from' to be less than 'to'"
        raise AugmentError(f"augment.train fails on the tensor backend: {_cut(err)} ({FIX_HINT})") from err
    if tuple(out.shape[2:]) != image_shape[:2]:
        raise AugmentError(
            f"augment.train turns {image_shape[0]}x{image_shape[1]} images into {out.shape[2]}x{out.shape[3]} on the "
            f"tensor backend: the network needs {image_shape[0]}x{image_shape[1]} ({FIX_HINT})"
        )


def _cut(err: Exception, limit: int = 300) -> str:
    text = str(err)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------- size rules
# For every albumentations 2.0.8 transform that can make an image larger (as its output, or inside it: a
# kernel, a zoomed copy, a padded one), the largest it can make from an h x w image, worst case over
# its draws: (out_h, out_w, largest inside in pixels). Every other transform keeps the size, which the
# forced run checks after it runs. Each rule may also refuse a size that does not fit the image.

SizeRule = Callable[[Any, int, int, str], tuple[float, float, float]]


def _keeps_size(t: Any, h: int, w: int, where: str) -> tuple[float, float, float]:
    return h, w, h * w


def _top(value: Any) -> float:
    """The largest number in a number, a range or a nested sequence of them (0 for None)."""
    if value is None:
        return 0.0
    if isinstance(value, dict):
        return max((_top(v) for v in value.values()), default=0.0)
    if isinstance(value, (tuple, list)):
        return max((_top(v) for v in value), default=0.0)
    return float(value)


def _fixed(t: Any, h: int, w: int, where: str) -> tuple[float, float, float]:
    """Output of a fixed size: Resize, RandomSizedBBoxSafeCrop, CropNonEmptyMaskIfExists... (height, width)."""
    return t.height, t.width, h * w


def _fixed_size(t: Any, h: int, w: int, where: str) -> tuple[float, float, float]:
    """RandomResizedCrop, RandomSizedCrop: size (height, width)."""
    return t.size[0], t.size[1], h * w


def _crop(t: Any, h: int, w: int, where: str) -> tuple[float, float, float]:
    """RandomCrop, CenterCrop: (height, width), padded first only with pad_if_needed."""
    if not t.pad_if_needed and (t.height > h or t.width > w):
        raise AugmentError(
            f"{where}: crop {t.height}x{t.width} is larger than the {h}x{w} image it gets; pad first "
            f"(PadIfNeeded) or set pad_if_needed: true ({FIX_HINT})"
        )
    return t.height, t.width, max(t.height, h) * max(t.width, w)


def _crop_box(t: Any, h: int, w: int, where: str) -> tuple[float, float, float]:
    """Crop: the box x_min..x_max, y_min..y_max."""
    return t.y_max - t.y_min, t.x_max - t.x_min, max(t.y_max, h) * max(t.x_max, w)


def _scale(t: Any, h: int, w: int, where: str) -> tuple[float, float, float]:
    """RandomScale: sides times 1 + scale_limit, at most 1 + its upper end."""
    factor = 1.0 + _top(t.scale_limit)
    return h * factor, w * factor, h * w


def _max_size(t: Any, h: int, w: int, where: str) -> tuple[float, float, float]:
    """LongestMaxSize, SmallestMaxSize: one side becomes max_size (or max_size_hw's); the other keeps the ratio."""
    side = max(_top(t.max_size), _top(t.max_size_hw)) * max(h, w) / min(h, w)
    return side, side, h * w


def _pad_if_needed(t: Any, h: int, w: int, where: str) -> tuple[float, float, float]:
    def padded(size: int, least: int | None, divisor: int | None) -> float:
        return max(size, least) if least is not None else math.ceil(size / divisor) * divisor

    return padded(h, t.min_height, t.pad_height_divisor), padded(w, t.min_width, t.pad_width_divisor), h * w


def _pad(t: Any, h: int, w: int, where: str) -> tuple[float, float, float]:
    """Pad: at most twice its largest padding on each side."""
    extra = 2 * _top(t.padding)
    return h + extra, w + extra, h * w


def _crop_and_pad(t: Any, h: int, w: int, where: str) -> tuple[float, float, float]:
    """CropAndPad: padded by up to its largest px (or percent of the side) each side; resized back with keep_size."""
    if t.px is not None:
        inner = (h + 2 * max(_top(t.px), 0), w + 2 * max(_top(t.px), 0))
    else:
        grow = 1 + 2 * max(_top(t.percent), 0)
        inner = (h * grow, w * grow)
    out = (h, w) if t.keep_size else inner
    return out[0], out[1], inner[0] * inner[1]


def _affine(t: Any, h: int, w: int, where: str) -> tuple[float, float, float]:
    """Affine: the same size, but with fit_output the bounding box of the warped image: at most its sides'
    sum, scaled, plus the shear's slant."""
    if not t.fit_output:
        return h, w, h * w
    shear = min(_top({k: tuple(abs(v) for v in r) for k, r in t.shear.items()}), 90.0)
    side = (h + w) * _top(t.scale) * (1 + (math.tan(math.radians(shear)) if shear < 90 else math.inf))
    return side, side, h * w


def _perspective(t: Any, h: int, w: int, where: str) -> tuple[float, float, float]:
    if t.fit_output:
        raise AugmentError(
            f"{where}: fit_output: true is not supported: its output size depends on the draw and has no bound "
            f"(16,562 px a side from a 32x32 image in 3,000 draws); keep fit_output false ({FIX_HINT})"
        )
    return h, w, h * w


def _zoom_blur(t: Any, h: int, w: int, where: str) -> tuple[float, float, float]:
    """ZoomBlur: zoomed copies of the image, up to max_factor times its sides, inside."""
    factor = _top(t.max_factor)
    return h, w, h * w * factor * factor


def _motion_blur(t: Any, h: int, w: int, where: str) -> tuple[float, float, float]:
    """MotionBlur: a square kernel of its largest blur_limit a side, inside."""
    return h, w, max(h * w, _top(t.blur_limit) ** 2)


def _defocus(t: Any, h: int, w: int, where: str) -> tuple[float, float, float]:
    """Defocus: a disk kernel of 2 * max(8, radius) + 1 a side, inside."""
    return h, w, max(h * w, (2 * max(8.0, _top(t.radius)) + 1) ** 2)


def _transposed(t: Any, h: int, w: int, where: str) -> tuple[float, float, float]:
    """Transpose, D4, SquareSymmetry, RandomRotate90: h and w may swap."""
    side = max(h, w)
    return side, side, h * w


def _holes(t: Any, h: int, w: int, where: str) -> tuple[float, float, float]:
    """CoarseDropout: in pixels (when hole_height_range's upper end is >= 1, as albumentations decides), the
    smallest hole must fit the image: a larger one fails when drawn (`low >= high`, or on the tensor backend
    `random_ expects 'from' < 'to'`), however rarely p lets it be drawn."""
    if t.hole_height_range[1] >= 1:
        for axis, (low, _), size in (("height", t.hole_height_range, h), ("width", t.hole_width_range, w)):
            if low > size:
                raise AugmentError(
                    f"{where}: hole_{axis}_range starts at {low:g} px, more than the {h}x{w} image's {axis}: "
                    f"the hole cannot be placed; make it at most {size} ({FIX_HINT})"
                )
    return h, w, h * w


def _mosaic(t: Any, h: int, w: int, where: str) -> tuple[float, float, float]:
    return t.target_size[0], t.target_size[1], max(h * w, t.target_size[0] * t.target_size[1],
                                                   t.cell_shape[0] * t.cell_shape[1])


_SIZE_RULES: dict[type, SizeRule] = {
    A.Resize: _fixed, A.RandomSizedBBoxSafeCrop: _fixed, A.CropNonEmptyMaskIfExists: _fixed,
    A.AtLeastOneBBoxRandomCrop: _fixed, A.RandomResizedCrop: _fixed_size, A.RandomSizedCrop: _fixed_size,
    A.RandomCrop: _crop, A.CenterCrop: _crop, A.Crop: _crop_box, A.RandomScale: _scale,
    A.LongestMaxSize: _max_size, A.SmallestMaxSize: _max_size, A.PadIfNeeded: _pad_if_needed, A.Pad: _pad,
    A.CropAndPad: _crop_and_pad, A.Affine: _affine, A.Perspective: _perspective, A.ZoomBlur: _zoom_blur,
    A.MotionBlur: _motion_blur, A.Defocus: _defocus, A.Transpose: _transposed, A.D4: _transposed,
    A.SquareSymmetry: _transposed, A.RandomRotate90: _transposed, A.CoarseDropout: _holes, A.Mosaic: _mosaic,
}


def size_bound(transform: A.BasicTransform, h: int, w: int, where: str = "") -> tuple[float, float, float]:
    """The largest (out_h, out_w, pixels inside) `transform` can make from an h x w image, by its rule in
    _SIZE_RULES (or the same size); AugmentError (naming `where`) for a size that does not fit the image."""
    return _SIZE_RULES.get(type(transform), _keeps_size)(transform, h, w, where or type(transform).__name__)


def _pixels(value: float) -> str:
    return f"{value:,.0f}" if math.isfinite(value) else str(value)


def _side(value: float) -> str:
    return f"{math.ceil(value)}" if math.isfinite(value) else str(value)


# ----------------------------------------------------------------------------- tensor backend


def normalize_batch(
    images: torch.Tensor | np.ndarray, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """The test-time transform (albumentations Normalize + ToTensorV2), vectorized.

    uint8 N,H,W,C (tensor on any device, or numpy) -> float32 N,C,H,W contiguous on the same
    device. Computes (x - 255 mean) * (1 / (255 std)) in float32, as albumentations does.
    """
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    _check_uint8_nhwc(images)
    shift = _constant(tuple(float(m) * 255.0 for m in mean), images.device, torch.float32)
    scale = torch.reciprocal(_constant(tuple(float(s) * 255.0 for s in std), images.device, torch.float32))
    # permute() of NHWC is an NCHW view with channels-last strides; float() keeps them, so the
    # result is already in the layout a channels-last model wants (no extra copy).
    return (images.permute(0, 3, 1, 2).float() - shift[:, None, None]) * scale[:, None, None]


class TensorAugment:
    """The recipe batched on the images' device: PadIfNeeded, RandomCrop, HorizontalFlip and
    CoarseDropout (in any order), then Normalize. Each image gets its own draws, with the
    distributions of albumentations 2.0.8 (see each op); the draws themselves differ.

    Args:
        aug: the `augment` params section; any other transform raises AugmentError.

    Every draw comes from the generator passed with each batch, so the caller decides the
    streams (EpochLoader seeds one per (seed, epoch, batch, rank): a resumed run draws what an
    uninterrupted one does). The same generator state, device and batch give the same output
    (CPU and CUDA draws differ).
    """

    def __init__(self, aug: AugmentParams) -> None:
        self.ops = _tensor_ops(build_albumentations(aug, seed=0))
        self.mean, self.std = aug.mean, aug.std

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """uint8 N,H,W,C tensor -> float32 N,C,H,W contiguous on the same device.

        `generator` may live on the images' device or on the CPU (draws are made on the
        generator's device and moved).
        """
        _check_uint8_nhwc(images)
        x = images
        for op in self.ops:
            x = op(x, generator)
        return normalize_batch(x, self.mean, self.std)


def _tensor_ops(pipeline: A.Compose) -> list:
    """Translate the built (hence validated) albumentations transforms into batched ops."""
    ops = []
    for index, transform in enumerate(pipeline.transforms[:-1]):  # the last is Normalize
        op = _TENSOR_OPS.get(type(transform))
        where = f"augment.train[{index}] {type(transform).__name__}"
        if op is None:
            raise AugmentError(
                f"{where}: the tensor backend supports only {', '.join(c.__name__ for c in _TENSOR_OPS)}; "
                "set augment.backend to albumentations to use other transforms"
            )
        ops.append(op(transform, where))
    return ops


class _Pad:
    """PadIfNeeded, position center: pad_top = (min_height - H) // 2, the rest at the bottom
    (likewise left/right), or up to a multiple of pad_*_divisor; all five OpenCV border modes."""

    def __init__(self, t: A.PadIfNeeded, where: str) -> None:
        _require(t.p >= 1.0, where, "p must be 1 (every image padded to the same size)")
        _require(t.position == "center", where, f"position must be center, got {t.position!r}")
        self.min_size = (t.min_height, t.min_width)
        self.divisor = (t.pad_height_divisor, t.pad_width_divisor)
        self.mode = t.border_mode
        self.fill = _fill_values(t.fill, where)

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        _, h, w, _ = x.shape
        (top, bottom), (left, right) = (
            _padding(size, m, d) for size, m, d in zip((h, w), self.min_size, self.divisor)
        )
        if top == bottom == left == right == 0:
            return x
        rows, row_ok = _border_index(torch.arange(-top, h + bottom, device=x.device), h, self.mode)
        cols, col_ok = _border_index(torch.arange(-left, w + right, device=x.device), w, self.mode)
        out = x[:, rows[:, None], cols[None, :]]
        if self.mode == cv2.BORDER_CONSTANT:
            outside = ~(row_ok[:, None] & col_ok[None, :])
            out = torch.where(outside[None, :, :, None], _fill_tensor(self.fill, x), out)
        return out


class _Crop:
    """RandomCrop: top-left uniform over every offset that fits, [0, H - h] x [0, W - w]
    (albumentations: int((H - h + 1) * u) with u uniform in [0, 1))."""

    def __init__(self, t: A.RandomCrop, where: str) -> None:
        _require(t.p >= 1.0, where, "p must be 1 (every image cropped to the same size)")
        _require(not t.pad_if_needed, where, "pad_if_needed is not supported; pad with PadIfNeeded before it")
        self.size = (t.height, t.width)
        self.where = where

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, h, w, _ = x.shape
        ch, cw = self.size
        if ch > h or cw > w:
            raise AugmentError(f"{self.where}: crop {ch}x{cw} is larger than the {h}x{w} images ({FIX_HINT})")
        top = _randint(gen, h - ch + 1, n, x.device)
        left = _randint(gen, w - cw + 1, n, x.device)
        rows = top[:, None] + torch.arange(ch, device=x.device)  # N, ch
        cols = left[:, None] + torch.arange(cw, device=x.device)  # N, cw
        batch = torch.arange(n, device=x.device)[:, None, None]
        return x[batch, rows[:, :, None], cols[:, None, :]]


class _Flip:
    """HorizontalFlip: each image mirrored with probability p."""

    def __init__(self, t: A.HorizontalFlip, where: str) -> None:
        self.p = t.p

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        flip = _bernoulli(gen, self.p, x.shape[0], x.device)
        return torch.where(flip[:, None, None, None], x.flip(2), x)


class _Cutout:
    """CoarseDropout with a numeric fill, as albumentations 2.0.8 draws it: with probability p,
    k holes, k uniform in num_holes_range; each hole's height uniform in hole_height_range clipped
    to H (integers when the height range's upper bound is >= 1, else int(H * uniform(lo, hi))),
    likewise its width;
    its top-left uniform over [0, H - height] x [0, W - width], so every hole lies inside the image.
    Holes are filled with the raw pixel value `fill` (per channel if a tuple)."""

    def __init__(self, t: A.CoarseDropout, where: str) -> None:
        _require(not isinstance(t.fill, str), where, f"fill must be a number or one per channel, got {shown(t.fill)}")
        self.p = t.p
        self.num_holes = t.num_holes_range
        self.ranges = (t.hole_height_range, t.hole_width_range)
        self.fill = _fill_values(t.fill, where)

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, h, w, _ = x.shape
        lo, hi = self.num_holes
        holes = lo + _randint(gen, hi - lo + 1, n, x.device)  # N
        active = torch.arange(hi, device=x.device)[None, :] < holes[:, None]  # N, hi
        active &= _bernoulli(gen, self.p, n, x.device)[:, None]
        pixels = self.ranges[0][1] >= 1  # albumentations decides pixels vs fractions by the height range
        inside = []
        for size, size_range in zip((h, w), self.ranges):  # rows, then columns
            extent = _hole_extent(gen, size, size_range, pixels, (n, hi), x.device)
            start = torch.floor(_uniform(gen, (n, hi), x.device) * (size - extent + 1)).long()
            start = torch.minimum(start, size - extent)  # guards the u -> 1 rounding edge
            pos = torch.arange(size, device=x.device)
            inside.append((pos >= start[..., None]) & (pos < (start + extent)[..., None]))  # N, hi, size
        mask = (inside[0][:, :, :, None] & inside[1][:, :, None, :] & active[:, :, None, None]).any(1)
        return torch.where(mask[..., None], _fill_tensor(self.fill, x), x)


_TENSOR_OPS = {A.PadIfNeeded: _Pad, A.RandomCrop: _Crop, A.HorizontalFlip: _Flip, A.CoarseDropout: _Cutout}


def _hole_extent(
    gen: torch.Generator, size: int, size_range: tuple, pixels: bool, shape: tuple, device: torch.device
) -> torch.Tensor:
    lo, hi = size_range
    if pixels:  # integers in [lo, min(hi, size)]
        return int(lo) + _randint(gen, int(min(hi, size)) - int(lo) + 1, shape, device)
    return (size * (lo + (hi - lo) * _uniform(gen, shape, device))).long()  # fractions of the side


def _padding(size: int, min_size: int | None, divisor: int | None) -> tuple[int, int]:
    """(before, after) as albumentations' get_dimension_padding."""
    if min_size is not None:
        total = max(min_size - size, 0)
    else:
        total = (divisor - size % divisor) % divisor
    return total // 2, total - total // 2


def _border_index(idx: torch.Tensor, n: int, mode: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Source index in [0, n) for each (possibly outside) index, as OpenCV's borderInterpolate;
    and whether it was inside (only BORDER_CONSTANT uses that)."""
    inside = (idx >= 0) & (idx < n)
    if mode == cv2.BORDER_REFLECT_101:
        period = max(2 * n - 2, 1)
        m = idx.remainder(period)
        src = torch.where(m < n, m, period - m)
    elif mode == cv2.BORDER_REFLECT:
        m = idx.remainder(2 * n)
        src = torch.where(m < n, m, 2 * n - 1 - m)
    elif mode == cv2.BORDER_WRAP:
        src = idx.remainder(n)
    else:  # BORDER_REPLICATE; BORDER_CONSTANT reads any pixel and overwrites it with the fill
        src = idx.clamp(0, n - 1)
    return src, inside


def _fill_values(fill: Any, where: str) -> tuple[float, ...]:
    values = tuple(fill) if isinstance(fill, (tuple, list)) else (fill,)
    _require(all(0 <= v <= 255 for v in values), where, f"fill must be raw pixel values in [0, 255], got {shown(fill)}")
    return values


def _fill_tensor(values: tuple[float, ...], x: torch.Tensor) -> torch.Tensor:
    if len(values) not in (1, x.shape[-1]):
        raise AugmentError(f"fill has {len(values)} values for images with {x.shape[-1]} channels ({FIX_HINT})")
    return _constant(values, x.device, x.dtype)


@functools.lru_cache(maxsize=64)
def _constant(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A small constant tensor, made once per device: torch.tensor() on CUDA is a host-to-device
    copy that blocks, and the step loop must not wait on the host. Cast to `dtype` truncates like
    np.array(fill, dtype=uint8)."""
    return torch.tensor(values, device=device).to(dtype)


def _require(ok: bool, where: str, problem: str) -> None:
    if not ok:
        raise AugmentError(f"{where}: the tensor backend needs {problem}; or set augment.backend to albumentations")


def _uniform(gen: torch.Generator, shape: Any, device: torch.device) -> torch.Tensor:
    """float64 uniforms in [0, 1), drawn on the generator's device, moved to `device`."""
    return torch.rand(shape, generator=gen, device=gen.device, dtype=torch.float64).to(device)


def _randint(gen: torch.Generator, high: int, shape: Any, device: torch.device) -> torch.Tensor:
    shape = (shape,) if isinstance(shape, int) else shape
    return torch.randint(0, high, shape, generator=gen, device=gen.device).to(device)


def _bernoulli(gen: torch.Generator, p: float, n: int, device: torch.device) -> torch.Tensor:
    return _uniform(gen, n, device) < p


def _check_uint8_nhwc(images: torch.Tensor) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 images N,H,W,C, got {images.dtype} of shape {tuple(images.shape)}")


def _as_uint8_nhwc_numpy(images: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(images, torch.Tensor):
        images = images.cpu().numpy()
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 images N,H,W,C, got {images.dtype} of shape {images.shape}")
    return images
