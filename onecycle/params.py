"""Typed, validated parameters: `params.yaml` is read once into these dataclasses.

Every stage calls `load_params(path)` before doing any work. An unknown key, a wrong type
or a value out of range raises `ParamsError` naming the key and what is allowed, so a typo
never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from onecycle.errors import UserError

# The choices, each written once: the dataclasses below are typed with these, validation reads them,
# and the modules that branch on a choice import the tuple derived from it.
Source = Literal["cifar10", "archive", "folder"]
Backend = Literal["auto", "albumentations", "tensor"]
StepMode = Literal["exp", "linear"]
Method = Literal["edge", "spike", "steepest", "valley", "minimum"]
Anneal = Literal["cos", "linear"]
Optimizer = Literal["sgd", "adam", "adamw"]
Device = Literal["auto", "cpu", "cuda", "mps"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
STEP_MODES: tuple[str, ...] = get_args(StepMode)
METHODS: tuple[str, ...] = get_args(Method)
BACKENDS: tuple[str, ...] = get_args(Backend)


class ParamsError(UserError):
    """A parameter is missing, unknown, of the wrong type or out of range."""


# ----------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class DataParams:
    source: Source = "cifar10"
    path: str | None = None  # local archive or folder, for sources `archive` and `folder`
    checksum: str = "auto"  # "auto" (published md5 for official archives), "none", or "md5:<hex>"/"sha256:<hex>"
    resize: bool = False  # folder source: resize images that are not 32x32 instead of failing
    train_samples: int | None = None  # class-balanced seeded subset of the train split
    test_samples: int | None = None  # same for the test split

    def __post_init__(self) -> None:
        if self.source in ("archive", "folder") and not self.path:
            raise ParamsError(
                f"data.path is required when data.source is {self.source!r}: "
                "set it to the local archive or folder to read"
            )
        _check_checksum("data.checksum", self.checksum)
        for name in ("train_samples", "test_samples"):
            value = getattr(self, name)
            if value is not None and value < 10:
                raise ParamsError(f"data.{name} must be null (all images) or at least 10 (one per class), got {value}")


@dataclass(frozen=True)
class ModelParams:
    width: int = 64  # channels of the first conv; the others are 2x, 4x, 8x of it

    def __post_init__(self) -> None:
        _positive("model.width", self.width)


@dataclass(frozen=True)
class AugmentParams:
    backend: Backend = "auto"
    mean: tuple[float, ...] = (0.4914, 0.4822, 0.4465)
    std: tuple[float, ...] = (0.2023, 0.1994, 0.2010)
    train: tuple[dict, ...] = ()  # albumentations transforms as [{Name: {arg: value}}], Normalize appended

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            value = getattr(self, name)
            if len(value) != 3:
                raise ParamsError(f"augment.{name} must have 3 values (R, G, B), got {len(value)}")
        if any(s <= 0 for s in self.std):
            raise ParamsError(f"augment.std values must be > 0, got {list(self.std)}")
        for i, item in enumerate(self.train):
            if not (isinstance(item, dict) and len(item) == 1):
                raise ParamsError(
                    f"augment.train[{i}] must be a mapping with one transform name, "
                    f"e.g. {{HorizontalFlip: {{p: 0.5}}}}, got {item!r}"
                )
            (args,) = item.values()
            if args is not None and not isinstance(args, dict):
                raise ParamsError(f"augment.train[{i}]: the arguments of {next(iter(item))} must be a mapping, got {args!r}")


@dataclass(frozen=True)
class LrRangeParams:
    start_lr: float = 1e-5
    end_lr: float = 1.0
    num_iter: int = 391
    step_mode: StepMode = "exp"
    smooth_decades: float = 0.5
    diverge_threshold: float = 5.0
    stop_above_start: bool = True
    method: Method = "spike"

    def __post_init__(self) -> None:
        _positive("lr_range_test.start_lr", self.start_lr)
        _positive("lr_range_test.end_lr", self.end_lr)
        if self.end_lr <= self.start_lr:
            raise ParamsError(
                f"lr_range_test.end_lr ({self.end_lr}) must be greater than start_lr ({self.start_lr})"
            )
        if self.num_iter < 2:
            raise ParamsError(f"lr_range_test.num_iter must be at least 2, got {self.num_iter}")
        decades = math.log10(self.end_lr / self.start_lr)
        if not 0 < self.smooth_decades <= decades / 4:
            raise ParamsError(
                f"lr_range_test.smooth_decades must be above 0 and at most a quarter of the swept "
                f"{decades:.3g} decades (start_lr to end_lr), got {self.smooth_decades}"
            )
        if self.diverge_threshold <= 1:
            raise ParamsError(f"lr_range_test.diverge_threshold must be > 1, got {self.diverge_threshold}")


@dataclass(frozen=True)
class TrainParams:
    max_lr: float | Literal["auto"] = "auto"
    epochs: int = 24
    batch_size: int = 128
    pct_start: float = 0.2083
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    anneal_strategy: Anneal = "cos"
    three_phase: bool = False
    cycle_momentum: bool = True
    base_momentum: float = 0.85
    max_momentum: float = 0.95
    optimizer: Optimizer = "sgd"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    device: Device = "auto"
    precision: Precision = "auto"
    channels_last: bool = True
    compile: bool = False
    num_workers: int | Literal["auto"] = "auto"
    nproc_per_node: int = 1
    sync_batchnorm: bool = False

    def __post_init__(self) -> None:
        if self.max_lr != "auto":
            _positive("train.max_lr", self.max_lr)
        _positive("train.epochs", self.epochs)
        _positive("train.batch_size", self.batch_size)
        if not 0 < self.pct_start < 1:
            raise ParamsError(f"train.pct_start must be in (0, 1), got {self.pct_start}")
        _positive("train.div_factor", self.div_factor)
        _positive("train.final_div_factor", self.final_div_factor)
        for name in ("base_momentum", "max_momentum", "momentum", "label_smoothing"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ParamsError(f"train.{name} must be in [0, 1), got {value}")
        if self.base_momentum > self.max_momentum:
            raise ParamsError(
                f"train.base_momentum ({self.base_momentum}) must not exceed max_momentum ({self.max_momentum})"
            )
        if self.weight_decay < 0:
            raise ParamsError(f"train.weight_decay must be >= 0, got {self.weight_decay}")
        if self.nesterov and self.optimizer != "sgd":
            raise ParamsError("train.nesterov applies only to optimizer 'sgd'")
        if self.num_workers != "auto" and self.num_workers < 0:
            raise ParamsError(f"train.num_workers must be 'auto' or >= 0, got {self.num_workers}")
        _positive("train.nproc_per_node", self.nproc_per_node)
        if self.batch_size < self.nproc_per_node:
            raise ParamsError(
                f"train.batch_size ({self.batch_size}) is global and must be at least train.nproc_per_node "
                f"({self.nproc_per_node}): every process needs images in every step"
            )


@dataclass(frozen=True)
class EvaluateParams:
    batch_size: int = 1000
    tta: bool = False  # also report accuracy averaged over the image and its horizontal flip
    misclassified: int = 36  # most confident mistakes drawn in plots/misclassified.png

    def __post_init__(self) -> None:
        _positive("evaluate.batch_size", self.batch_size)
        if self.misclassified < 0:
            raise ParamsError(f"evaluate.misclassified must be >= 0, got {self.misclassified}")


@dataclass(frozen=True)
class Params:
    seed: int = 1
    data: DataParams = field(default_factory=DataParams)
    model: ModelParams = field(default_factory=ModelParams)
    augment: AugmentParams = field(default_factory=AugmentParams)
    lr_range_test: LrRangeParams = field(default_factory=LrRangeParams)
    train: TrainParams = field(default_factory=TrainParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ParamsError(f"seed must be >= 0, got {self.seed}")


# ----------------------------------------------------------------------------- loading


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read, type-check and validate `params.yaml`. Raises ParamsError on any problem."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file {path} not found: run from the project root or pass --params")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ParamsError(f"{path} is not valid YAML: {err}") from err
    if raw is None:
        raw = {}
    return parse_params(raw)


def parse_params(raw: Any) -> Params:
    """Build `Params` from plain data (what `yaml.safe_load` returns)."""
    return _build(Params, raw, "")


def to_dict(params: Any) -> dict:
    """Plain, YAML/JSON-serialisable form of a params dataclass (for the resolved-params dump)."""
    return _plain(dataclasses.asdict(params))


# What each stage reads, in dvc.yaml's terms (a section, or section.key), written once: dvc.yaml declares
# exactly these (tests/test_params.py checks it), so a stage reruns when one of them changes; the
# training checkpoint is fingerprinted by train_onecycle's, and models/model.json records them.
STAGE_READS: dict[str, tuple[str, ...]] = {
    "download": ("data.source", "data.path", "data.checksum", "data.resize"),
    # the range test uses train_onecycle's batch size, optimizer and numerics
    "lr_range_test": ("seed", "data.train_samples", "model.width", "augment", "lr_range_test", "train.batch_size",
                      "train.optimizer", "train.momentum", "train.nesterov", "train.weight_decay",
                      "train.label_smoothing", "train.device", "train.precision", "train.channels_last"),
    "train_onecycle": ("seed", "data.train_samples", "data.test_samples", "model.width", "augment", "train"),
    "evaluate": ("seed", "data.test_samples", "model.width", "augment.mean", "augment.std", "train.device",
                 "train.precision", "train.channels_last", "evaluate"),
}


def reads(params: Params, stage: str) -> dict:
    """The plain nested dict of what `stage` reads (STAGE_READS) from `params`."""
    whole, out = to_dict(params), {}
    for key in STAGE_READS[stage]:
        section, _, name = key.partition(".")
        if name:
            out.setdefault(section, {})[name] = whole[section][name]
        else:
            out[section] = whole[section]
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _build(cls: type, raw: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "params.yaml"
    if not isinstance(raw, dict):
        raise ParamsError(f"{where} must be a mapping of keys to values, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ParamsError(f"unknown key {prefix}{unknown[0]}: allowed keys in {where} are {', '.join(names)}")
    values = {name: _convert(hints[name], raw[name], f"{prefix}{name}") for name in names if name in raw}
    return cls(**values)


def _convert(hint: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".")
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        errors = []
        for option in get_args(hint):
            try:
                return _convert(option, value, key)
            except ParamsError as err:
                errors.append(err)
        allowed = " or ".join(_describe(o) for o in get_args(hint))
        raise ParamsError(f"{key} must be {allowed}, got {value!r}")
    if origin is Literal:
        if value not in get_args(hint):
            raise ParamsError(f"{key} must be one of {', '.join(map(str, get_args(hint)))}; got {value!r}")
        return value
    if hint is type(None):
        if value is not None:
            raise ParamsError(f"{key} must be null, got {value!r}")
        return None
    if hint is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{key} must be an integer, got {value!r}")
        return value
    if hint is float:
        # YAML reads "1e-5" (no dot) as a string: accept numeric strings, reject the rest.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ParamsError(f"{key} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"{key} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ParamsError(f"{key} must be a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ParamsError(f"{key} must be a string, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise ParamsError(f"{key} must be a list, got {value!r}")
        (item_hint, _ellipsis) = get_args(hint)
        return tuple(_convert(item_hint, v, f"{key}[{i}]") for i, v in enumerate(value))
    if hint is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"{key} must be a mapping, got {value!r}")
        return value
    raise TypeError(f"no converter for {hint} at {key}")  # a bug in this module, not in the user's file


def _describe(hint: Any) -> str:
    if get_origin(hint) is Literal:
        return " or ".join(repr(a) for a in get_args(hint))
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint))


def _positive(key: str, value: float) -> None:
    if not value > 0:
        raise ParamsError(f"{key} must be > 0, got {value}")


def _check_checksum(key: str, value: str) -> None:
    if value in ("auto", "none"):
        return
    algo, _, digest = value.partition(":")
    lengths = {"md5": 32, "sha256": 64}
    if algo not in lengths or len(digest) != lengths[algo] or any(c not in "0123456789abcdef" for c in digest.lower()):
        raise ParamsError(f"{key} must be 'auto', 'none', 'md5:<32 hex digits>' or 'sha256:<64 hex digits>', got {value!r}")
