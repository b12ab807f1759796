"""Typed, validated parameters: `params.yaml` is read once into these dataclasses.

Every stage calls `load_params(path)` before doing any work. An unknown key, a wrong type
or a value out of range raises `ParamsError` naming the key and what is allowed, so a typo
never silently falls back to a default. Every number that could overflow something or make no
sense has a stated range (the constants below, each with its reason), and the file itself is read
strictly: UTF-8, at most MAX_PARAMS_BYTES, no duplicate keys (DVC refuses those files too), no YAML
anchors or aliases (a few of them nested make a value of billions of items), no deeper nesting
than MAX_PARAMS_DEPTH. Values printed in messages are cut to SHOWN_CHARS, so no message outgrows
the file it came from.
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
import stat
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


# ----------------------------------------------------------------------------- limits, each with its reason

SEED_MAX = 2**32 - 1  # a 32-bit unsigned seed: what numpy's legacy seeding takes (torch.manual_seed overflows
#                       above 2**64 - 1, and a 24-digit seed raised a traceback there)
MIN_LR = 1e-10  # below it an SGD step changes no float32 weight (their resolution is ~1e-7 relative)
MAX_LR = 10.0  # ten times the range test's default end_lr; super-convergence's largest max LR for CIFAR ResNets
#                is 3 (Smith & Topin 2017); a max_lr of 1e308 overflowed the schedule to inf
MAX_WIDTH = 512  # 8x the reference's 64: 421 M parameters (they grow as width squared), 1.7 GB of fp32 weights and
#                  5-7 GB with gradients and optimizer state before any activation; width 100,000 asks for terabytes
MAX_EPOCHS = 10_000  # the reference trains 24; a one-cycle run of ten thousand epochs is a typo, not a plan
MAX_BATCH = 65_536  # more than CIFAR-10's 50,000 training images in one step: a larger batch changes nothing
MAX_NUM_ITER = 100_000  # the reference sweeps 391 batches (one epoch); the sweep keeps a row per batch in memory
MAX_PROCESSES = 64  # DataLoader workers and processes per machine: each is a process with its own copy of the
#                     data pipeline; more than 64 exhausts process and memory limits long before it helps
MAX_DIV_FACTOR = 1e6  # initial LR = max_lr / div_factor: beyond 1e6 the warm-up starts at nothing measurable
MAX_FINAL_DIV_FACTOR = 1e9  # final LR = initial / final_div_factor: beyond 1e9 it is below MIN_LR for any max LR
MAX_WEIGHT_DECAY = 1.0  # per step, times the LR: a decay of 1 at LR 1 removes the weights whole in one step
MIN_STD = 1e-3  # augment.std, of pixels in [0, 1]: keeps normalized pixels within +-1000 (1e-300 made them inf)
MAX_MISCLASSIFIED = 120  # plots/misclassified.png: 20 rows of 6; 10,000 asked matplotlib for a 400,000 px tall figure

MAX_PARAMS_BYTES = 1 << 20  # the committed params.yaml is ~6 KB: a MiB is room for any real one
MAX_PARAMS_DEPTH = 32  # levels of nesting; the deepest real value (an augment argument's list) is at level 6
SHOWN_CHARS = 200  # a value from the user's file printed in a message is cut to this many characters


class ParamsError(UserError):
    """A parameter is missing, unknown, of the wrong type or out of range, or params.yaml cannot be read."""


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """repr() of a value from the user's file, at most `limit` characters: a message never grows with the input
    (a value of nested aliases once made one of gigabytes). Integers too long to print in full give their size."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of {value.bit_length():,} bits"
    short = reprlib.Repr()
    short.maxlevel, short.maxdict, short.maxlist, short.maxtuple = 3, 6, 6, 6
    short.maxstring = short.maxother = short.maxlong = limit
    text = short.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
        # No upper bound: load_split refuses more images than the prepared split holds, naming both counts.


@dataclass(frozen=True)
class ModelParams:
    width: int = 64  # channels of the first conv; the others are 2x, 4x, 8x of it

    def __post_init__(self) -> None:
        _within("model.width", self.width, 1, MAX_WIDTH, "the network's size grows as its square: 512 is 8x the "
                "reference's 64, 421 M parameters, 1.7 GB of fp32 weights")


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
        for i, m in enumerate(self.mean):
            _within(f"augment.mean[{i}]", m, 0.0, 1.0, "a channel's mean of pixels scaled to [0, 1]")
        for i, s in enumerate(self.std):
            _within(f"augment.std[{i}]", s, MIN_STD, 1.0, "a channel's std of pixels in [0, 1]; "
                    f"below {MIN_STD} normalized pixels overflow")
        for i, item in enumerate(self.train):
            if not (isinstance(item, dict) and len(item) == 1):
                raise ParamsError(
                    f"augment.train[{i}] must be a mapping with one transform name, "
                    f"e.g. {{HorizontalFlip: {{p: 0.5}}}}, got {shown(item)}"
                )
            (name, args), = item.items()
            if args is not None and not isinstance(args, dict):
                raise ParamsError(f"augment.train[{i}]: the arguments of {shown(name)} must be a mapping, "
                                  f"got {shown(args)}")


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
        check_lr(self.start_lr, "lr_range_test.start_lr")
        check_lr(self.end_lr, "lr_range_test.end_lr")
        if self.end_lr <= self.start_lr:
            raise ParamsError(
                f"lr_range_test.end_lr ({self.end_lr}) must be greater than start_lr ({self.start_lr})"
            )
        _within("lr_range_test.num_iter", self.num_iter, 2, MAX_NUM_ITER,
                "batches in the sweep: the reference's is 391, one epoch")
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
            check_lr(self.max_lr, "train.max_lr")
        _within("train.epochs", self.epochs, 1, MAX_EPOCHS, "the reference trains 24")
        _within("train.batch_size", self.batch_size, 1, MAX_BATCH, "images per step; CIFAR-10 has 50,000")
        if not 0 < self.pct_start < 1:
            raise ParamsError(f"train.pct_start must be in (0, 1), got {self.pct_start}")
        if self.three_phase and not self.pct_start < 0.5:
            raise ParamsError(
                f"train.pct_start must be below 0.5 with three_phase: true (the rise and the fall each take pct_start "
                f"of the steps, and the annihilation needs what is left), got {self.pct_start}"
            )
        _within("train.div_factor", self.div_factor, 1.0, MAX_DIV_FACTOR,
                "the initial LR is max_lr / div_factor: below 1 the warm-up would start above max_lr")
        _within("train.final_div_factor", self.final_div_factor, 1.0, MAX_FINAL_DIV_FACTOR,
                "the final LR is the initial LR / final_div_factor: below 1 the run would end above where it began")
        for name in ("base_momentum", "max_momentum", "momentum", "label_smoothing"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ParamsError(f"train.{name} must be in [0, 1), got {value}")
        if self.base_momentum > self.max_momentum:
            raise ParamsError(
                f"train.base_momentum ({self.base_momentum}) must not exceed max_momentum ({self.max_momentum})"
            )
        _within("train.weight_decay", self.weight_decay, 0.0, MAX_WEIGHT_DECAY,
                "per step, times the LR: 1 at LR 1 removes the weights in one step")
        if self.nesterov and self.optimizer != "sgd":
            raise ParamsError("train.nesterov applies only to optimizer 'sgd'")
        if self.num_workers != "auto":
            _within("train.num_workers", self.num_workers, 0, MAX_PROCESSES,
                    "'auto' or a count of DataLoader worker processes, each with its own copy of the pipeline")
        _within("train.nproc_per_node", self.nproc_per_node, 1, MAX_PROCESSES, "processes (GPUs) on this machine")
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
        _within("evaluate.batch_size", self.batch_size, 1, MAX_BATCH, "images per forward pass; memory only")
        _within("evaluate.misclassified", self.misclassified, 0, MAX_MISCLASSIFIED,
                "images drawn in plots/misclassified.png, 6 to a row")


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
        _within("seed", self.seed, 0, SEED_MAX, "a 32-bit unsigned seed, what numpy's and torch's seeding accept")


# ----------------------------------------------------------------------------- loading


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read, type-check and validate `params.yaml`. Raises ParamsError on any problem: a missing or special
    file, one over MAX_PARAMS_BYTES, not UTF-8, not YAML, empty, with duplicate keys, anchors or aliases,
    nested deeper than MAX_PARAMS_DEPTH, or any value of the wrong type or out of its range."""
    path = Path(path)
    raw = _read_yaml(path)
    if raw is None:
        raise ParamsError(
            f"{path} holds no parameters (it is empty or only comments): restore the project's params.yaml "
            "(git checkout params.yaml), or write {} to run every default on purpose"
        )
    return parse_params(raw)


def _read_yaml(path: Path) -> Any:
    """The plain data of the YAML file `path`, read as _StrictLoader allows."""
    try:
        info = path.stat()
    except OSError:
        raise ParamsError(f"params file {path} not found: run from the project root or pass --params") from None
    if not stat.S_ISREG(info.st_mode):
        raise ParamsError(f"params file {path} is not a regular file: pass a params.yaml with --params")
    if info.st_size > MAX_PARAMS_BYTES:
        raise ParamsError(f"params file {path} is {info.st_size:,} bytes; a params file is a few KB, and more than "
                          f"{MAX_PARAMS_BYTES:,} is refused: pass the right file")
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_PARAMS_BYTES + 1)  # bounded even if the file grew since stat()
    except OSError as err:
        raise ParamsError(f"cannot read params file {path}: {err.strerror or err}") from err
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ParamsError(
            f"{path} is not UTF-8 text (byte 0x{data[err.start]:02x} at line {line}): save it as UTF-8, "
            "as DVC reads it"
        ) from None
    loader = _StrictLoader(text, path)
    try:
        return loader.get_single_data()
    except ParamsError:
        raise
    except yaml.YAMLError as err:
        raise ParamsError(f"{path} is not valid YAML: {_cut(str(err))}") from None
    except ValueError as err:  # an integer of more than 4,300 digits (Python's int() limit)
        raise ParamsError(f"{path} holds a value YAML cannot convert: {_cut(str(err))}") from None
    finally:
        loader.dispose()


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses, with ParamsError naming the line, what params.yaml never needs:

    - anchors and aliases: DVC users do not need them, and a 1.7 KB file of nested aliases expands to
      a value of billions of items (a "billion laughs"), which hung the stage while it printed it;
    - duplicate keys: PyYAML keeps the last silently, DVC refuses the file;
    - nesting deeper than MAX_PARAMS_DEPTH: PyYAML composes recursively, so a 100,000-deep list was a
      RecursionError traceback.
    """

    def __init__(self, text: str, path: Path) -> None:
        super().__init__(text)
        self.path, self.depth = path, 0

    def where(self, mark: yaml.Mark | None) -> str:
        return f"{self.path}, line {mark.line + 1}" if mark is not None else str(self.path)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            kind = "alias *" if isinstance(event, yaml.AliasEvent) else "anchor &"
            raise ParamsError(
                f"{self.where(event.start_mark)}: YAML {kind}{_cut(str(event.anchor), 40)} is not allowed in a "
                "params file (anchors and aliases can expand without bound): write each value out"
            )
        if self.depth >= MAX_PARAMS_DEPTH:
            raise ParamsError(
                f"{self.where(event.start_mark)}: values nested more than {MAX_PARAMS_DEPTH} levels deep are "
                "refused (the deepest real one, an augment argument's list, is at level 6)"
            )
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark)
            except TypeError:  # an unhashable key: SafeLoader's own construct_mapping says so
                continue
            if first is not key_node.start_mark:
                raise ParamsError(
                    f"{self.where(key_node.start_mark)}: key {shown(key, 60)} appears twice in one mapping "
                    f"(first at line {first.line + 1}); YAML keeps only the last and DVC refuses the file: "
                    "delete one"
                )
        return super().construct_mapping(node, deep)


def _cut(text: str, limit: int = SHOWN_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
    unknown = sorted((key for key in raw if key not in names), key=str)  # YAML keys may be numbers, not only str
    if unknown:
        key = unknown[0] if isinstance(unknown[0], str) and len(unknown[0]) <= 60 else shown(unknown[0], 60)
        raise ParamsError(f"unknown key {prefix}{key}: allowed keys in {where} are {', '.join(names)}")
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
        raise ParamsError(f"{key} must be {allowed}, got {shown(value)}")
    if origin is Literal:
        if value not in get_args(hint):
            raise ParamsError(f"{key} must be one of {', '.join(map(str, get_args(hint)))}; got {shown(value)}")
        return value
    if hint is type(None):
        if value is not None:
            raise ParamsError(f"{key} must be null, got {shown(value)}")
        return None
    if hint is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{key} must be true or false, got {shown(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{key} must be an integer, got {shown(value)}")
        return value
    if hint is float:
        # YAML reads "1e-5" (no dot) as a string: accept numeric strings, reject the rest.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ParamsError(f"{key} must be a number, got {shown(value)}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"{key} must be a number, got {shown(value)}")
        try:
            value = float(value)
        except OverflowError:  # an integer beyond float's range
            raise ParamsError(f"{key} must be a finite number, got {shown(value)}") from None
        if not math.isfinite(value):
            raise ParamsError(f"{key} must be a finite number, got {shown(value)}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ParamsError(f"{key} must be a string, got {shown(value)}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise ParamsError(f"{key} must be a list, got {shown(value)}")
        (item_hint, _ellipsis) = get_args(hint)
        return tuple(_convert(item_hint, v, f"{key}[{i}]") for i, v in enumerate(value))
    if hint is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"{key} must be a mapping, got {shown(value)}")
        return value
    raise TypeError(f"no converter for {hint} at {key}")  # a bug in this module, not in the user's file


def _describe(hint: Any) -> str:
    if get_origin(hint) is Literal:
        return " or ".join(repr(a) for a in get_args(hint))
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint))


def _within(key: str, value: float, low: float, high: float, why: str) -> None:
    """ParamsError unless low <= value <= high, stating the range and `why` (NaN is outside every range)."""
    if not low <= value <= high:
        raise ParamsError(f"{key} must be between {_number(low)} and {_number(high)} ({why}), got {shown(value)}")


def _number(value: float) -> str:
    """A bound as a reader wants it: 4,294,967,295; 65,536; 0.001; 1e-10."""
    if isinstance(value, int) or float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:g}"


def check_lr(value: float, source: str, fix: str = "") -> float:
    """`value` if it is a learning rate in [MIN_LR, MAX_LR], else ParamsError naming `source` (a param key,
    or where a file's value came from), the range with its reason, and `fix` if given. Returns it as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not MIN_LR <= value <= MAX_LR:
        raise ParamsError(
            f"{source} must be between {MIN_LR:g} and {MAX_LR:g} (an SGD step changes no float32 weight below "
            f"{MIN_LR:g}; {MAX_LR:g} is ten times the range test's default end_lr and three times the largest max "
            f"LR one-cycle papers use), got {shown(value)}" + (f": {fix}" if fix else "")
        )
    return float(value)


def _check_checksum(key: str, value: str) -> None:
    if value in ("auto", "none"):
        return
    algo, _, digest = value.partition(":")
    lengths = {"md5": 32, "sha256": 64}
    if algo not in lengths or len(digest) != lengths[algo] or any(c not in "0123456789abcdef" for c in digest.lower()):
        raise ParamsError(f"{key} must be 'auto', 'none', 'md5:<32 hex digits>' or 'sha256:<64 hex digits>', got {shown(value)}")
