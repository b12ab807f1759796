"""One base for the user's errors; each choice list written once, as a Literal type in params."""

from __future__ import annotations

import typing

import pytest

from onecycle import augment, cli, data, device, errors, io, lr_range, params, train


@pytest.mark.parametrize("cls", [params.ParamsError, data.DataError, io.ArtifactError, io.WriteError,
                                 augment.AugmentError, device.DeviceError, train.NonFiniteLoss])
def test_every_user_facing_error_is_a_user_error(cls):
    assert issubclass(cls, errors.UserError)


def test_a_user_error_exits_2_and_removes_outputs_anything_else_keeps_its_traceback(tmp_path, capsys):
    out = tmp_path / "out.json"
    out.write_text("stale")

    def bad_input():
        raise device.DeviceError("no such device: set train.device")

    with pytest.raises(SystemExit) as exit_info:
        cli.run_stage(bad_input, [out])
    assert exit_info.value.code == cli.EXIT_BAD_INPUT and not out.exists()
    assert "error: no such device" in capsys.readouterr().err

    out.write_text("stale")
    with pytest.raises(ZeroDivisionError):
        cli.run_stage(lambda: 1 / 0, [out])
    assert not out.exists()


def test_choices_come_from_the_literal_types_of_params():
    hints = typing.get_type_hints(params.LrRangeParams)
    assert params.METHODS == typing.get_args(hints["method"]) == lr_range.METHODS
    assert params.STEP_MODES == typing.get_args(hints["step_mode"])
    assert augment.BACKENDS == tuple(b for b in typing.get_args(typing.get_type_hints(params.AugmentParams)["backend"])
                                     if b != "auto")
