"""Command-line value checks (utils/cli_args.py): argparse ``type`` functions that refuse a bad
value naming the flag, with usage and one error line (exit 2)."""

import argparse
import re

import pytest
import torch

from avfusion.utils.cli_args import device_arg, int_at_least, positive_float


@pytest.mark.parametrize("minimum, text, message", [
    (1, "0", "must be a positive integer, got 0"),
    (0, "-1", "must be a non-negative integer, got -1"),
    (2, "1", "must be an integer >= 2, got 1"),
    (1, "2.5", "expected an integer, got '2.5'"),
])
def test_int_at_least_refuses(minimum, text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape(message)):
        int_at_least(minimum)(text)


def test_int_at_least_accepts():
    assert int_at_least(1)("3") == 3 and int_at_least(0)("0") == 0 and int_at_least(-2)("-2") == -2


def test_positive_float():
    assert positive_float("0.5") == 0.5 and positive_float("1e-3") == 1e-3
    for text in ("0", "-1", "inf", "-inf", "nan"):
        with pytest.raises(argparse.ArgumentTypeError, match="must be a finite number > 0"):
            positive_float(text)
    with pytest.raises(argparse.ArgumentTypeError, match="expected a number, got 'abc'"):
        positive_float("abc")


def test_device_arg(monkeypatch):
    assert device_arg("auto") == "auto" and device_arg("cpu") == "cpu"
    for text in ("gpu", "meta"):
        with pytest.raises(argparse.ArgumentTypeError, match="device must be auto, cpu, cuda or cuda:N, got"):
            device_arg(text)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(argparse.ArgumentTypeError, match="device 'cuda:0': this machine has no CUDA device"):
        device_arg("cuda:0")


def test_argparse_names_the_flag_and_exits_2(capsys):
    ap = argparse.ArgumentParser(prog="avfusion x")
    ap.add_argument("--workers", type=int_at_least(0))
    assert ap.parse_args(["--workers", "2"]).workers == 2
    with pytest.raises(SystemExit) as e:
        ap.parse_args(["--workers", "-2"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: avfusion x")
    assert err.splitlines()[-1] == "avfusion x: error: argument --workers: must be a non-negative integer, got -2"
