"""onecycle.augment: the albumentations pipeline from params, and the batched tensor backend.

The statistical test decodes every augmented image exactly (each pixel of the probe image encodes
its own position), so it checks both that each output is a genuine pad-crop-flip-cutout of the input
and that the two backends draw those operations from the same distributions.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
import torch

from onecycle.augment import (
    AlbumentationsBatch,
    AugmentError,
    TensorAugment,
    always_applied,
    build_albumentations,
    normalize_batch,
    resolve_backend,
    size_bound,
    validate,
)
from onecycle.params import AugmentParams, load_params

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def aug() -> AugmentParams:
    return load_params(ROOT / "params.yaml").augment


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def _recipe(*train: dict, **kw) -> AugmentParams:
    return AugmentParams(train=tuple(train), **kw)


# ----------------------------------------------------------------------------- building, errors


def test_default_recipe_output_shape_and_dtype(aug):
    pipeline = build_albumentations(aug, seed=1)
    out = pipeline(image=_images(1)[0])["image"]
    assert out.shape == (32, 32, 3) and out.dtype == np.float32
    assert isinstance(pipeline.transforms[-1], A.Normalize)
    assert pipeline.transforms[0].border_mode == cv2.BORDER_REFLECT_101  # "reflect" in params.yaml

    images = _images(5)
    tensor = TensorAugment(aug)(torch.from_numpy(images), torch.Generator().manual_seed(1))
    for batch in (AlbumentationsBatch(aug, seed=1)(images), tensor):
        assert batch.shape == (5, 3, 32, 32) and batch.dtype == torch.float32


def test_seeded_draws_are_reproducible(aug):
    images = _images(16)
    one = build_albumentations(aug, seed=3)
    two = build_albumentations(aug, seed=3)
    for image in images:
        np.testing.assert_array_equal(one(image=image)["image"], two(image=image)["image"])

    a, b, c = AlbumentationsBatch(aug, seed=3), AlbumentationsBatch(aug, seed=3), AlbumentationsBatch(aug, seed=4)
    first = a(images)
    assert torch.equal(first, b(images))
    assert not torch.equal(first, c(images))
    assert not torch.equal(a(images), first)  # the stream moves on between calls
    a.reseed(3)
    assert torch.equal(a(images), first)  # and restarts on reseed (per-epoch resume)


def test_tensor_backend_draws_from_the_generator_it_is_given(aug):
    images = torch.from_numpy(_images(16))
    tensor = TensorAugment(aug)
    gen = torch.Generator().manual_seed(5)
    first = tensor(images, gen)
    assert not torch.equal(tensor(images, gen), first)  # the generator's stream moves on
    assert torch.equal(tensor(images, torch.Generator().manual_seed(5)), first)
    assert not torch.equal(tensor(images, torch.Generator().manual_seed(6)), first)


def test_each_transform_gets_its_own_random_stream(aug):
    # albumentations 2.0.8's Compose(seed=s) seeds every transform with the same s, so the first
    # flip decision would equal the first cutout decision; build_albumentations separates them.
    pipeline = build_albumentations(aug, seed=1)
    firsts = [t.py_random.random() for t in pipeline.transforms]
    assert len(set(firsts)) == len(firsts)


def test_unknown_transform_is_named():
    with pytest.raises(AugmentError, match=r"augment\.train\[1\] HorizontalFlp.*HorizontalFlip"):
        validate(_recipe({"HorizontalFlip": {}}, {"HorizontalFlp": {"p": 0.5}}))
    with pytest.raises(AugmentError, match="__version__"):
        validate(_recipe({"__version__": {}}))
    with pytest.raises(AugmentError, match="Normalize is appended"):
        validate(_recipe({"Normalize": {}}))


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ({"p": 2}, "p: Input should be less than or equal to 1"),
        ({"nonsense_arg": 1}, "unknown argument 'nonsense_arg'"),
    ],
)
def test_bad_argument_names_the_transform(args, problem):
    with pytest.raises(AugmentError, match=r"augment\.train\[0\] HorizontalFlip") as err:
        validate(_recipe({"HorizontalFlip": args}))
    assert problem in str(err.value) and "params.yaml" in str(err.value)


def test_bad_border_mode_string():
    with pytest.raises(AugmentError, match="border_mode must be one of"):
        validate(_recipe({"PadIfNeeded": {"min_height": 40, "min_width": 40, "border_mode": "mirror"}}))


def test_tensor_backend_rejects_other_transforms(aug):
    recipe = _recipe(*aug.train, {"Rotate": {"limit": 10}}, backend="tensor")
    with pytest.raises(AugmentError, match=r"augment\.train\[4\] Rotate.*tensor backend supports only"):
        validate(recipe)
    with pytest.raises(AugmentError, match="Rotate"):
        TensorAugment(recipe)
    with pytest.raises(AugmentError, match="fill"):
        TensorAugment(_recipe({"CoarseDropout": {"fill": "random"}}))
    validate(_recipe(*aug.train, {"Rotate": {"limit": 10}}, backend="albumentations"))  # fine per image


def test_resolve_backend(aug):
    assert resolve_backend("auto", aug.train) == "tensor"
    assert resolve_backend("albumentations", aug.train) == "albumentations"
    assert resolve_backend("tensor", aug.train) == "tensor"
    assert resolve_backend("auto", ({"Rotate": {}},)) == "albumentations"


# ----------------------------------------------------------------------------- exact equivalences


def test_normalize_batch_equals_albumentations_normalize(aug):
    images = _images(4, seed=7)
    normalize = A.Normalize(mean=aug.mean, std=aug.std, max_pixel_value=255.0)
    expected = np.stack([normalize(image=im)["image"] for im in images]).transpose(0, 3, 1, 2)
    for given in (images, torch.from_numpy(images)):
        out = normalize_batch(given, aug.mean, aug.std)
        assert out.dtype == torch.float32
        np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-5)


def test_tensor_backend_without_randomness_is_normalize_batch(aug):
    recipe = _recipe(
        {"RandomCrop": {"height": 32, "width": 32}},  # the only offset on 32x32 is 0
        {"HorizontalFlip": {"p": 0.0}},
        {"CoarseDropout": {"hole_height_range": [8, 8], "hole_width_range": [8, 8], "p": 0.0}},
        mean=aug.mean,
        std=aug.std,
    )
    images = torch.from_numpy(_images(8))
    out = TensorAugment(recipe)(images, torch.Generator().manual_seed(0))
    assert torch.equal(out, normalize_batch(images, aug.mean, aug.std))


@pytest.mark.parametrize("border_mode", ["reflect", "symmetric", "replicate", "wrap", "constant"])
def test_tensor_padding_equals_albumentations(border_mode):
    # deterministic transforms: padding by more than the image (multiple reflections), odd split,
    # a per-channel fill, then a flip
    recipe = _recipe(
        {"PadIfNeeded": {"min_height": 75, "min_width": 40, "border_mode": border_mode, "fill": [1, 2, 3]}},
        {"HorizontalFlip": {"p": 1.0}},
    )
    images = _images(3, seed=2)
    expected = AlbumentationsBatch(recipe, seed=0)(images)
    out = TensorAugment(recipe)(torch.from_numpy(images), torch.Generator().manual_seed(0))
    assert out.shape == expected.shape == (3, 3, 75, 40)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_full_image_hole_is_filled_with_raw_value():
    whole = {"hole_height_range": [32, 32], "hole_width_range": [32, 32], "fill": 255, "p": 1.0}
    recipe = _recipe({"CoarseDropout": whole})
    out = TensorAugment(recipe)(torch.from_numpy(_images(2)), torch.Generator().manual_seed(0))
    white = torch.full((2, 32, 32, 3), 255, dtype=torch.uint8)
    assert torch.equal(out, normalize_batch(white, recipe.mean, recipe.std))


# ----------------------------------------------------------------------------- same distributions


def _probe() -> np.ndarray:
    """32x32 image whose red encodes the row, green the column; blue 255, so 0 means cut out."""
    r, c = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    return np.stack([10 + 7 * r, 10 + 7 * c, np.full_like(r, 255)], axis=-1).astype(np.uint8)


def _decode(out: np.ndarray, probe: np.ndarray) -> dict[str, np.ndarray]:
    """Recover (crop offset, flip, hole) of each uint8 N,H,W,C output, and check that applying
    exactly those to the probe gives the output back."""
    n = len(out)
    filled = out[..., 2] == 0
    cut = filled.any(axis=(1, 2))
    hole_y = filled.any(axis=2).argmax(axis=1)
    hole_x = filled.any(axis=1).argmax(axis=1)
    row = (out[..., 0].astype(int) - 10) // 7
    col = (out[..., 1].astype(int) - 10) // 7
    both = ~filled[:, :, 1:] & ~filled[:, :, :-1]
    flip = ((col[:, :, 1:] - col[:, :, :-1]) * both).sum(axis=(1, 2)) < 0
    col = np.where(flip[:, None, None], col[:, :, ::-1], col)
    kept = np.where(flip[:, None, None], ~filled[:, :, ::-1], ~filled)
    centre = np.zeros((32, 32), bool)
    centre[4:28, 4:28] = True  # output pixels whose source is inside the image for every offset
    i, j = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    use = kept & centre
    dy = np.where(use, row - i + 4, -1).max(axis=(1, 2))
    dx = np.where(use, col - j + 4, -1).max(axis=(1, 2))

    padded = np.pad(probe, ((4, 4), (4, 4), (0, 0)), mode="reflect")
    rows = dy[:, None] + np.arange(32)
    cols = dx[:, None] + np.arange(32)
    expected = padded[rows[:, :, None], cols[:, None, :]]
    expected[flip] = expected[flip, :, ::-1]
    hole = (
        cut[:, None, None]
        & (i >= hole_y[:, None, None]) & (i < hole_y[:, None, None] + 8)
        & (j >= hole_x[:, None, None]) & (j < hole_x[:, None, None] + 8)
    )
    expected[hole] = 0
    assert np.array_equal(expected, out), "an output is not a pad-crop-flip-8x8-cutout of the input"
    assert n == len(dy)
    return {"flip": flip, "cut": cut, "dy": dy, "dx": dx, "hole_y": hole_y, "hole_x": hole_x}


def _draw(
    augment, probe: np.ndarray, batch: int, calls: int, as_tensor: bool
) -> tuple[dict, np.ndarray, np.ndarray]:
    """Decoded draws of `calls` batches of the probe, and the per-pixel mean and variance of the outputs."""
    images = np.repeat(probe[None], batch, axis=0)
    given = torch.from_numpy(images) if as_tensor else images
    parts, total, total_sq = [], 0.0, 0.0
    for _ in range(calls):
        out = augment(given).numpy()  # mean 0, std 1: out = pixel / 255
        pixels = np.rint(out.transpose(0, 2, 3, 1) * 255).astype(np.uint8)
        parts.append(_decode(pixels, probe))
        total = total + out.astype(np.float64).sum(0)
        total_sq = total_sq + (out.astype(np.float64) ** 2).sum(0)
    draws = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    n = batch * calls
    mean = total / n
    return draws, mean, total_sq / n - mean**2


def _chi2_limit(dof: int, z: float = 5.0) -> float:
    """Upper z-sigma quantile of chi-square(dof), Wilson-Hilferty approximation."""
    return dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3


def _chi2_uniform(counts: np.ndarray) -> float:
    expected = counts.sum() / counts.size
    return float(((counts - expected) ** 2 / expected).sum())


def _chi2_same(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample homogeneity statistic over the cells (dof = cells - 1)."""
    na, nb = a.sum(), b.sum()
    pooled = (a + b) / (na + nb)
    keep = pooled > 0
    return float((((a - na * pooled) ** 2 / (na * pooled) + (b - nb * pooled) ** 2 / (nb * pooled))[keep]).sum())


def test_backends_draw_from_the_same_distribution(aug):
    recipe = AugmentParams(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), train=aug.train)  # the default recipe
    probe = _probe()
    n = 2048 * 8
    alb, alb_mean, alb_var = _draw(AlbumentationsBatch(recipe, seed=11), probe, 2048, 8, as_tensor=False)
    tensor = partial(TensorAugment(recipe), generator=torch.Generator().manual_seed(11))
    ten, ten_mean, ten_var = _draw(tensor, probe, 2048, 8, as_tensor=True)

    for key in ("flip", "cut"):  # rate 0.5 each, and the same in both
        for draws in (alb, ten):
            assert abs(draws[key].mean() - 0.5) < 5 * math.sqrt(0.25 / n), key
        pooled = (alb[key].mean() + ten[key].mean()) / 2
        assert abs(alb[key].mean() - ten[key].mean()) < 5 * math.sqrt(pooled * (1 - pooled) * 2 / n), key

    def table(d: dict, keys: tuple[str, str], size: int, where: np.ndarray | None = None) -> np.ndarray:
        sel = slice(None) if where is None else where
        return np.bincount(d[keys[0]][sel] * size + d[keys[1]][sel], minlength=size * size).astype(float)

    # flip and cutout independent of each other: 4 cells, uniform
    for d in (alb, ten):
        assert _chi2_uniform(table(d, ("flip", "cut"), 2)) < _chi2_limit(3)
    # crop offset: uniform over 0..8 x 0..8 (81 cells), and the same in both
    crops = [table(d, ("dy", "dx"), 9) for d in (alb, ten)]
    for counts in crops:
        assert _chi2_uniform(counts) < _chi2_limit(80)
    assert _chi2_same(*crops) < _chi2_limit(80)
    # hole top-left: uniform over 0..24 x 0..24 (the 8x8 hole always inside), and the same in both
    holes = [table(d, ("hole_y", "hole_x"), 25, d["cut"]) for d in (alb, ten)]
    for counts in holes:
        assert _chi2_uniform(counts) < _chi2_limit(624)
    assert _chi2_same(*holes) < _chi2_limit(624)
    # fraction of cut-out pixels
    alb_fill, ten_fill = (d["cut"].mean() * 64 / 1024 for d in (alb, ten))
    assert abs(alb_fill - ten_fill) < 5 * math.sqrt(2 * 0.25 / n) * 64 / 1024
    # mean image, pixel by pixel (3072 comparisons: 5.5 sigma keeps the family's false alarms < 1e-4)
    z = (alb_mean - ten_mean) / np.sqrt((alb_var + ten_var) / n)
    assert np.abs(z).max() < 5.5


@pytest.mark.parametrize(
    ("item", "words"),
    [({"RandomCrop": {"height": 36, "width": 36}}, ["crop 36x36 is larger than the 32x32 image"]),
     ({"Resize": {"height": 64, "width": 64}}, ["into 64x64", "needs 32x32"]),
     ({"XYMasking": {"num_masks_x": 1, "mask_x_length": 40, "p": 0.1}}, ["XYMasking fails on a 32x32 image"])],
)
def test_validate_checks_sizes_and_runs_the_recipe_on_a_blank_image(item, words):
    with pytest.raises(AugmentError) as err:
        validate(_recipe(item, backend="albumentations"))
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize("item", [
    {"Resize": {"height": 40, "width": 50}},
    {"RandomScale": {"scale_limit": [0.2, 0.5]}},
    {"LongestMaxSize": {"max_size": [40, 64]}},
    {"SmallestMaxSize": {"max_size": 40}},
    {"SmallestMaxSize": {"max_size_hw": [40, None]}},
    {"PadIfNeeded": {"min_height": 48, "min_width": 40}},
    {"PadIfNeeded": {"min_height": None, "min_width": None, "pad_height_divisor": 20, "pad_width_divisor": 7}},
    {"Pad": {"padding": [1, 2, 3, 4]}},
    {"RandomResizedCrop": {"size": [24, 40]}},
    {"CropAndPad": {"px": [1, 5, 3, -2], "keep_size": False}},
    {"CropAndPad": {"px": [-2, 6], "keep_size": False}},
    {"CropAndPad": {"percent": 0.3, "keep_size": False}},
    {"Affine": {"scale": [0.5, 2.0], "rotate": [-180, 180], "shear": [-30, 30], "fit_output": True}},
    {"RandomCrop": {"height": 40, "width": 40, "pad_if_needed": True}},
    {"Crop": {"x_min": 2, "y_min": 3, "x_max": 20, "y_max": 30}},
    {"Transpose": {}},
    {"RandomRotate90": {}},
], ids=lambda item: next(iter(item)))
def test_size_rules_bound_what_the_transforms_make(item):
    """validate refuses a recipe by these bounds before running it: each must hold for every draw."""
    (transform,) = build_albumentations(always_applied(_recipe(item)), seed=0).transforms[:-1]
    image = np.zeros((32, 48, 3), np.uint8)  # not square, so a rule that mixes up the sides shows
    bound_h, bound_w, _ = size_bound(transform, 32, 48)
    for _ in range(200):
        out = transform(image=image)["image"]
        assert out.shape[0] <= math.ceil(bound_h) and out.shape[1] <= math.ceil(bound_w), (out.shape, bound_h, bound_w)
