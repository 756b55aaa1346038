"""The error contract of the command line (docs/DESIGN.md section 6).

An expected failure is one line on stderr, `avfusion CMD: error: MESSAGE`, and exit status 2;
a bad flag is argparse's usage and error line, exit 2; a programming error keeps its traceback
(`--debug` shows the traceback of an expected failure too).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

import avfusion
from avfusion.cli import main
from avfusion.models.pretrained import save_pretrained


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Paths the bad invocations name: missing ones, a folder, damaged files, a small real model."""
    d = tmp_path_factory.mktemp("bad_inputs")
    (d / "folder").mkdir()
    (d / "empty_model").mkdir()
    (d / "garbage.msgpack").write_bytes(b"garbage\x00\x01")
    (d / "not_mbt.msgpack").write_bytes(msgpack.packb({"params": {"Dense_0": {"kernel": 1}}}))
    (d / "a_file").write_text("x\n")
    (d / "bad_labels.csv").write_text("a,b\n1,2\n")
    save_pretrained(avfusion.create_model("mbt_tiny", num_classes=2), d / "model")
    return {"d": str(d)}


@pytest.fixture(autouse=True)
def no_long_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad invocation that slipped through validation must fail here, not run the demo or a benchmark."""
    import avfusion.cli.bench
    import avfusion.demo.run

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a bad invocation got past the argument checks")

    monkeypatch.setattr(avfusion.demo.run, "run_demo", refuse)
    monkeypatch.setattr(avfusion.cli.bench, "bench_models", refuse)


# (argv, text the error line must contain); {d} is the folder of the `files` fixture.
ONE_LINE_ERRORS = [
    ("flops mbt_huge", "unknown model 'mbt_huge'"),
    ("flops mbt_tiny fusion_layr=3", "unknown ModelConfig key(s) ['fusion_layr']"),
    ("flops mbt_tiny fusion_layer=abc", "config key 'fusion_layer' expects int, got 'abc'"),
    ("flops mbt_tiny fusion_layer=99", "fusion_layer must be in [0, depth=4], got 99"),
    ("flops mbt_tiny fusion_layer", "override 'fusion_layer' is not key=value"),
    ("flops mbt_tiny fusion_layer=[1", "override 'fusion_layer=[1': the value is not valid YAML"),
    ("flops mbt_tiny image_size=5", "image_size must be 2 positive integers"),
    ("flops mbt_tiny image_size=[50,48]", "must be multiples of tubelet"),
    ("flops mbt_tiny preprocess.fsp=3", "unknown PreprocessConfig key(s) ['fsp']"),
    ("convert scenic-mbt {d}/missing.msgpack --out {d}/out", "checkpoint '{d}/missing.msgpack' does not exist"),
    ("convert scenic-mbt {d}/folder --out {d}/out", "is a directory, not a file"),
    ("convert scenic-mbt {d}/garbage.msgpack --out {d}/out", "is not a flax msgpack checkpoint"),
    ("convert scenic-mbt {d}/not_mbt.msgpack --out {d}/out", "not a scenic MBT checkpoint"),
    ("convert scenic-mbt {d}/garbage.msgpack --out {d}/a_file", "--out {d}/a_file is a file, not a directory"),
    ("convert scenic-mbt {d}/garbage.msgpack --out {d}/model", "already holds a model; pass --force"),
    ("convert scenic-mbt {d}/garbage.msgpack --out {d}/out --labels {d}/missing.csv", "No such file"),
    ("convert scenic-mbt {d}/garbage.msgpack --out {d}/out --labels {d}/bad_labels.csv",
     "expected columns index,mid,display_name"),
    ("bench mbt_huge --device cpu", "unknown model 'mbt_huge'"),
    ("bench mbt_tiny depth=x --device cpu", "config key 'depth' expects int"),
    ("bench mbt_tiny --device cpu --out {d}/folder", "--out {d}/folder is a directory"),
    ("bench mbt_tiny --device cpu --out {d}/missing/b.json", "folder {d}/missing does not exist"),
    ("eval --model {d}/missing --data {d}/m.csv --labels {d}/l.csv", "no model directory"),
    ("eval --model {d}/empty_model --data {d}/m.csv --labels {d}/l.csv", "no model.safetensors"),
    ("eval --model {d}/model --data {d}/missing.csv --labels {d}/l.csv", "missing.csv: no such manifest, shard folder or file"),
    ("predict x.mp4 --model {d}/missing", "no model directory"),
]


@pytest.mark.parametrize("argv, expected", ONE_LINE_ERRORS, ids=[a for a, _ in ONE_LINE_ERRORS])
def test_an_expected_failure_is_one_line_and_exit_2(argv: str, expected: str, files: dict[str, str],
                                                     capsys: pytest.CaptureFixture) -> None:
    args = [a.format(**files) for a in argv.split()]
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"avfusion {args[0]}: error: "), err
    assert expected.format(**files) in lines[0]
    assert "Traceback" not in err


# Bad flags: argparse prints usage and one error line naming the flag, and exits 2.
FLAG_ERRORS = [
    ("models mbt_huge*", "no model matches 'mbt_huge*'"),
    ("flops mbt_tiny --modalities sound", "--modalities must be a comma list of audio, video"),
    ("demo --seed -1", "argument --seed: must be a non-negative integer, got -1"),
    ("demo --steps 0", "argument --steps: must be a positive integer, got 0"),
    ("demo --jobs 0", "argument --jobs: must be a positive integer, got 0"),
    ("demo --clips 10 0 10", "argument --clips: must be a positive integer, got 0"),
    ("demo --models mbt_huge", "--models: 'mbt_huge' not among the demo's models"),
    ("demo --smoke --pattern nothing*", "--pattern 'nothing*' matches no model"),
    ("bench mbt_tiny --batch-size 0", "argument --batch-size: must be a positive integer, got 0"),
    ("bench mbt_tiny --repeats 0", "argument --repeats: must be a positive integer, got 0"),
    ("bench mbt_tiny --warmup -1", "argument --warmup: must be a non-negative integer, got -1"),
    ("bench mbt_tiny --threads 0", "argument --threads: must be a positive integer, got 0"),
    ("bench mbt_tiny --attn-impl flash", "--attn-impl must be among"),
    ("bench mbt_tiny --device tpu", "argument --device: device must be auto, cpu, cuda or cuda:N, got 'tpu'"),
    ("predict x.mp4 --device gpu", "argument --device: device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
    ("eval --model m --data m.csv --device cuda:x", "argument --device: device must be auto, cpu, cuda or cuda:N"),
    ("bench mbt_huge*", "no model matches 'mbt_huge*'"),
    ("convert scenic-mbt x.msgpack --out o --fusion-layer eight", "argument --fusion-layer: invalid int value"),
    ("convert tf-mbt x --out o", "invalid choice: 'tf-mbt'"),
    ("eval --data m.csv --labels l.csv", "the following arguments are required: --model"),
    ("predict", "the following arguments are required: videos"),
]


@pytest.mark.parametrize("argv, expected", FLAG_ERRORS, ids=[a for a, _ in FLAG_ERRORS])
def test_a_bad_flag_is_argparses_usage_and_exit_2(argv: str, expected: str, capsys: pytest.CaptureFixture) -> None:
    args = argv.split()
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: avfusion ") and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"avfusion {args[0]}") and ": error: " in last and expected in last, err


@pytest.mark.parametrize("error", [KeyError("fusion_layr"), ValueError("a bug"), TypeError("a bug")])
def test_a_programming_error_is_not_swallowed(error: Exception, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture) -> None:
    import avfusion.cli.models

    def broken(argv: list[str] | None = None) -> int:
        raise error

    monkeypatch.setattr(avfusion.cli.models, "main", broken)
    with pytest.raises(type(error)):
        main(["models"])
    assert capsys.readouterr().err == ""


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import avfusion.cli.models

    def interrupted(argv: list[str] | None = None) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(avfusion.cli.models, "main", interrupted)
    assert main(["models"]) == 130
    assert capsys.readouterr().err == "avfusion models: interrupted\n"
    with pytest.raises(KeyboardInterrupt):
        main(["models", "--debug"])


def test_a_multi_line_message_is_printed_on_one_line(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    import avfusion.cli.models
    from avfusion.errors import InputError

    def failing(argv: list[str] | None = None) -> int:
        raise InputError("m.csv row 3:\n  bad path\n")

    monkeypatch.setattr(avfusion.cli.models, "main", failing)
    assert main(["models"]) == 2
    assert capsys.readouterr().err == "avfusion models: error: m.csv row 3: bad path\n"


def test_debug_shows_the_traceback() -> None:
    src = str(Path(avfusion.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("AVFUSION_DEBUG", None)
    cmd = [sys.executable, "-m", "avfusion", "flops", "mbt_huge"]
    plain = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 2
    assert plain.stderr.splitlines() == [plain.stderr.strip()] and "Traceback" not in plain.stderr
    debug = subprocess.run([*cmd, "--debug"], env=env, capture_output=True, text=True, timeout=120)
    assert debug.returncode == 1  # the exception left the interpreter
    assert "Traceback (most recent call last)" in debug.stderr
    assert "avfusion.errors.ConfigError: unknown model 'mbt_huge'" in debug.stderr
