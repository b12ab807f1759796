"""Image-folder trees (`train/<class>/*`, `test/<class>/*`, as a folder or an archive) and decoding their images."""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from onecycle.data.members import location, read_members
from onecycle.data.split import SIZE, SPLITS, DataError, Split

# The most pixels an image may have: 4096 x 4096 (16.8 M; 64 MiB decoded at 4 bytes a pixel). A
# 12-megapixel photo to resize fits; a decompression bomb (a 419 KB PNG of 12000 x 12000, 1.4 GB
# decoded) does not. Read from the header, before decoding.
MAX_IMAGE_PIXELS = 4096 * 4096

# How each PIL mode becomes 8-bit RGB with data.resize: true: its full range kept, never clipped.
# PIL's convert("RGB") does that for these (alpha is dropped; 16-bit RGB(A) PNGs open as 8-bit RGB(A)).
_EIGHT_BIT_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"})
# 16-bit grey (0..65535), which convert("RGB") would clip at 255 (a mid-grey becomes white): scaled here.
_SIXTEEN_BIT_GREY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
# Any other mode (32-bit integer "I", float "F", "LAB", premultiplied "RGBa") has no range or
# conversion to define 8-bit RGB by: refused, naming the mode.


def read_folder(path: Path, resize: bool) -> tuple[Split, Split]:
    """Train and test splits of an image-folder tree (a folder or an archive of one).

    Labels are indices into the sorted class folder names; images within a class follow their
    file names, so the result does not depend on the order of a listing or an archive.
    """
    files, dirs = read_members(path, lambda name: True)
    dirs |= {parent for name in files for parent in _parents(name)}
    root = find_root(dirs, path)
    per_split = {split: _class_files(files, dirs, f"{root}{split}", path) for split in SPLITS}
    classes = sorted(per_split["train"])
    if set(per_split["test"]) != set(classes):
        only_train = sorted(set(classes) - set(per_split["test"]))
        only_test = sorted(set(per_split["test"]) - set(classes))
        raise DataError(
            f"train/ and test/ in {path} must have the same class folders: only in train: {only_train}, "
            f"only in test: {only_test}"
        )
    if len(classes) < 2:
        raise DataError(
            f"{path} has one class folder ({classes[0]}): a classifier needs at least 2 classes "
            "(with one, every prediction is right); add the others"
        )
    names = {split: [name for cls in classes for name in per_split[split][cls]] for split in SPLITS}
    every = names["train"] + names["test"]
    in_folder = path.is_dir()
    wheres = [f"{path}/{name}" if in_folder else f"member {name} of {path}" for name in every]
    images = decode_images([files[name] for name in every], wheres, resize)
    splits = []
    for split, start in zip(SPLITS, (0, len(names["train"]))):
        counts = [len(per_split[split][cls]) for cls in classes]
        labels = np.repeat(np.arange(len(classes), dtype=np.int64), counts)
        splits.append(Split(images[start:start + len(labels)], labels, classes))
    return splits[0], splits[1]


def _parents(name: str) -> list[str]:
    parts = name.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def find_root(dirs: set[str], path: Path) -> str:
    """The prefix ("" or "top/") of the shallowest folder holding both train/ and test/."""
    candidates = {""} | dirs
    both = [d for d in candidates if _join(d, "train") in dirs and _join(d, "test") in dirs]
    if not both:
        halves = sorted(d for d in dirs if PurePosixPath(d).name in SPLITS)
        found = f"found only {', '.join(h + '/' for h in halves)}" if halves else "found neither train/ nor test/"
        raise DataError(
            f"{path} is not an image-folder tree: expected train/<class>/<image> and test/<class>/<image> "
            f"(at the top or under one folder), {found}"
        )
    depth = min(d.count("/") + bool(d) for d in both)
    shallowest = sorted(d for d in both if d.count("/") + bool(d) == depth)
    if len(shallowest) > 1:
        raise DataError(f"{path} holds several image-folder trees ({', '.join(shallowest)}): keep one")
    return f"{shallowest[0]}/" if shallowest[0] else ""


def _join(parent: str, child: str) -> str:
    return f"{parent}/{child}" if parent else child


def _class_files(files: dict[str, bytes], dirs: set[str], base: str, path: Path) -> dict[str, list[str]]:
    """Class name -> its image names sorted by name, for the split folder `base`."""
    prefix = f"{base}/"
    by_class: dict[str, list[str]] = {d[len(prefix):]: [] for d in dirs if d.startswith(prefix) and "/" not in d[len(prefix):]}
    for name in files:
        if name.startswith(prefix):
            rest = name[len(prefix):].split("/")
            if len(rest) != 2:
                raise DataError(f"{location(path, name)} is not directly inside a class folder: expected {base}/<class>/<image>")
            by_class[rest[0]].append(name)
    if not by_class:
        raise DataError(f"{base}/ in {path} has no class folders: expected {base}/<class>/<image>")
    for name, images in by_class.items():
        if not images:
            raise DataError(f"class folder {base}/{name} in {path} has no images: add its images or remove the folder")
    return {name: sorted(images) for name, images in by_class.items()}


def decode_images(datas: list[bytes], wheres: list[str], resize: bool) -> np.ndarray:
    """Decode encoded images into one N x 32 x 32 x 3 uint8 array; `wheres` names each one in errors.

    One process: on the 2 shared cores we plan for, a pool of 2 decoded the 60,000 JPEGs of
    ../shared/datasets in 2.7-4.2 s against 3.5-4.1 s alone, not worth worker start-up and the
    `spawn` pitfalls (it cannot start from `python -`).
    """
    images = np.empty((len(datas), SIZE, SIZE, 3), np.uint8)
    for i, (data, where) in enumerate(zip(datas, wheres)):
        images[i] = decode_image(data, where, resize)
    return images


def decode_image(data: bytes, where: str, resize: bool) -> np.ndarray:
    """A 32 x 32 x 3 uint8 RGB array from encoded image bytes.

    Size and mode come from the header, before decoding: more than MAX_IMAGE_PIXELS is refused, and
    so is a mode with no defined 8-bit RGB conversion. Anything other than RGB 32x32 is an error
    unless `resize` (then: convert to 8-bit RGB, scaling 16-bit grey, and resize bilinearly):
    silently converting would hide a wrong dataset.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # PIL's limit is above ours
            image = Image.open(io.BytesIO(data))  # reads the header only
        with image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise DataError(_too_large(where, f"{width}x{height} pixels"))
            if image.mode not in _EIGHT_BIT_MODES | _SIXTEEN_BIT_GREY_MODES:
                raise DataError(
                    f"{where} is a {image.mode} image, which has no defined conversion to 8-bit RGB (only 1-, 8- and "
                    "16-bit grey, palette, RGB, RGBA, CMYK and YCbCr images are read): save it as 8-bit RGB"
                )
            if image.mode != "RGB" or image.size != (SIZE, SIZE):
                if not resize:
                    raise DataError(
                        f"{where} is a {image.mode} {width}x{height} image, expected RGB {SIZE}x{SIZE}: "
                        "convert it, or set data.resize: true to convert to RGB and resize (bilinear)"
                    )
                return np.asarray(_to_rgb(image).resize((SIZE, SIZE), Image.Resampling.BILINEAR))
            image.load()  # decode now, so a truncated file fails here and is named
            return np.asarray(image)
    except UnidentifiedImageError:
        raise DataError(f"{where} is not an image PIL can read: remove it (class folders must hold only images)") from None
    except Image.DecompressionBombError as err:  # PIL's own limit (2 x 89 M pixels), met in Image.open
        raise DataError(_too_large(where, str(err))) from None
    except OSError as err:
        raise DataError(f"{where} is a damaged image ({err}): replace or remove it") from err


def _too_large(where: str, size: str) -> str:
    side = math.isqrt(MAX_IMAGE_PIXELS)
    return (f"{where} is too large ({size}): more than the {MAX_IMAGE_PIXELS:,} pixels ({side}x{side}) an image "
            "may have, refused before decoding it; shrink it first")


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from one of the accepted modes, over the mode's full range."""
    if image.mode in _SIXTEEN_BIT_GREY_MODES:
        grey = np.asarray(image).astype(np.uint32)
        return Image.fromarray(((grey * 255 + 32767) // 65535).astype(np.uint8)).convert("RGB")  # round(v / 257)
    return image.convert("RGB")
