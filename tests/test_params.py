"""params.yaml is read once into typed dataclasses; every mistake names its key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from onecycle.params import Params, ParamsError, load_params, parse_params, to_dict

ROOT = Path(__file__).resolve().parents[1]


def committed() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_committed_params_are_the_reference_run():
    p = load_params(ROOT / "params.yaml")
    assert p.model.width == 64
    assert (p.train.epochs, p.train.batch_size, p.train.pct_start) == (24, 128, 0.2083)
    assert (p.train.div_factor, p.train.final_div_factor, p.train.anneal_strategy) == (25.0, 1e4, "cos")
    assert (p.lr_range_test.start_lr, p.lr_range_test.end_lr, p.lr_range_test.num_iter) == (1e-5, 1.0, 391)
    assert p.augment.mean == (0.4914, 0.4822, 0.4465)
    assert p.augment.std == (0.2023, 0.1994, 0.2010)


def test_yaml_defaults_equal_dataclass_defaults():
    """The dataclass defaults and params.yaml must not drift apart (except the augment recipe list)."""
    from_file = to_dict(load_params(ROOT / "params.yaml"))
    defaults = to_dict(Params())
    from_file["augment"]["train"] = defaults["augment"]["train"] = []
    assert from_file == defaults


def test_round_trip_of_resolved_params():
    p = load_params(ROOT / "params.yaml")
    assert parse_params(to_dict(p)) == p


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda d: d["train"].update(bogus=1), ["unknown key train.bogus", "epochs"]),
        (lambda d: d.update(extra={}), ["unknown key extra"]),
        (lambda d: d["train"].update(batch_size="128"), ["train.batch_size", "integer"]),
        (lambda d: d["train"].update(batch_size=0), ["train.batch_size", "between 1 and 65,536"]),
        (lambda d: d["train"].update(epochs=0), ["train.epochs"]),
        (lambda d: d["train"].update(max_lr=-0.1), ["train.max_lr", "between 1e-10 and 10"]),
        (lambda d: d["train"].update(max_lr="big"), ["train.max_lr", "auto"]),
        (lambda d: d["train"].update(pct_start=1.0), ["train.pct_start", "(0, 1)"]),
        (lambda d: d["train"].update(optimizer="rmsprop"), ["train.optimizer", "sgd", "adamw"]),
        (lambda d: d["train"].update(device="tpu"), ["train.device", "cuda", "mps"]),
        (lambda d: d["train"].update(precision="fp8"), ["train.precision", "bf16"]),
        (lambda d: d["train"].update(anneal_strategy="step"), ["train.anneal_strategy", "cos"]),
        (lambda d: d["train"].update(three_phase="yes"), ["train.three_phase", "true or false"]),
        (lambda d: d["data"].update(source="imagenet"), ["data.source", "cifar10", "folder"]),
        (lambda d: d["data"].update(source="folder"), ["data.path", "required"]),
        (lambda d: d["data"].update(checksum="md5:xyz"), ["data.checksum"]),
        (lambda d: d["data"].update(train_samples=5), ["data.train_samples"]),
        (lambda d: d["lr_range_test"].update(start_lr=0), ["lr_range_test.start_lr", "between 1e-10 and 10"]),
        (lambda d: d["lr_range_test"].update(end_lr=1e-6), ["end_lr", "greater than start_lr"]),
        (lambda d: d["lr_range_test"].update(method="eyeball"), ["lr_range_test.method", "spike", "valley"]),
        (lambda d: d["lr_range_test"].update(smooth_decades=2.0), ["lr_range_test.smooth_decades", "quarter"]),
        (lambda d: d["lr_range_test"].update(smooth_beta=0.98), ["smooth_beta"]),
        (lambda d: d["model"].update(width=0), ["model.width"]),
        (lambda d: d["augment"].update(mean=[0.5, 0.5]), ["augment.mean", "3 values"]),
        (lambda d: d["augment"].update(train=["HorizontalFlip"]), ["augment.train[0]"]),
        (lambda d: d["evaluate"].update(batch_size=-1), ["evaluate.batch_size"]),
        (lambda d: d["train"].update(batch_size=4, nproc_per_node=8), ["train.batch_size", "nproc_per_node"]),
        (lambda d: d.update(train=[1, 2]), ["train must be a mapping"]),
    ],
)
def test_bad_values_name_the_key(edit, words):
    raw = copy.deepcopy(committed())
    edit(raw)
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    for word in words:
        assert word in str(err.value)


def test_scientific_notation_without_dot_is_a_number(tmp_path):
    raw = committed()
    raw["lr_range_test"]["start_lr"] = "1e-5"  # PyYAML reads 1e-5 (no dot) as a string
    assert parse_params(raw).lr_range_test.start_lr == 1e-5


def test_malformed_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("train: {epochs: [\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "missing.yaml")


def test_dvc_yaml_declares_exactly_what_each_stage_reads():
    """STAGE_READS is the one definition: dvc.yaml's per-stage params must be the same keys."""
    from onecycle.params import STAGE_READS

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert {name: tuple(stage.get("params", ())) for name, stage in stages.items()} == STAGE_READS


def test_reads_picks_sections_and_single_keys():
    from onecycle.params import reads

    got = reads(load_params(ROOT / "params.yaml"), "evaluate")
    assert set(got) == {"seed", "data", "model", "augment", "train", "evaluate"}
    assert got["data"] == {"test_samples": None} and set(got["augment"]) == {"mean", "std"}
