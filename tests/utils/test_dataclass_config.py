"""Typed dataclass configs from YAML files and dicts (utils/dataclass_config.py)."""

import re
from dataclasses import dataclass, field

import pytest

from avfusion.errors import ConfigError
from avfusion.train.config import TrainConfig
from avfusion.utils.dataclass_config import build, load_yaml


def test_empty_section_keeps_the_defaults():
    assert build(TrainConfig, {"run": None}).run == TrainConfig().run


def test_yaml_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: mbt_tiny\nrun:\n  out: [runs/a\n  seed: 1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml'?: YAML syntax error at line \d+, column \d+"):
        load_yaml(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("run: 5\n")
    with pytest.raises(ConfigError, match=r"config key 'run' must be a mapping \(section\), got 5"):
        build(TrainConfig, load_yaml(scalar))
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_yaml(listed)
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml")


@dataclass
class _Inner:
    lr: float = 0.1
    name: str = "a"


@dataclass
class _Outer:
    inner: _Inner = field(default_factory=_Inner)
    steps: int = 1


def test_values_are_typed_and_bad_keys_and_values_are_named():
    """The module docstring's promises on a dataclass of its own: "1e-3" (a string to YAML 1.1)
    becomes a float, a number for a str field a string; an unknown key is refused naming the
    valid ones, a value of the wrong type naming the key."""
    cfg = build(_Outer, {"inner": {"name": 2026}}, ["inner.lr=1e-3", "steps=4"])
    assert cfg == _Outer(_Inner(lr=1e-3, name="2026"), steps=4)
    with pytest.raises(ConfigError, match=re.escape("unknown config key(s) ['inner.rate']; valid: ['lr', 'name']")):
        build(_Outer, {}, ["inner.rate=1"])
    with pytest.raises(ConfigError, match=re.escape("config key 'inner.lr' expects float, got 'abc' (str)")):
        build(_Outer, {}, ["inner.lr=abc"])
    with pytest.raises(ConfigError, match=re.escape("config key 'steps' expects int, got 2.5 (float)")):
        build(_Outer, {"steps": 2.5})


def _bomb(levels: int = 9) -> str:
    """The billion-laughs document: each level lists the previous one 9 times (9**9 strings from 400 bytes)."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_is_refused_at_once_with_little_memory(tmp_path, capsys):
    import time
    import tracemalloc

    from avfusion.cli import main

    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb())
    assert len(path.read_bytes()) < 800
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        rc = main(["train", str(path)])  # before: 44-73 s and 0.6-0.9 GB before a refusal
    finally:
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "bomb.yaml" in err[0] and "expand to more than 100000 values" in err[0], err
    assert seconds < 2.0 and peak < 20 * 2**20, (seconds, peak)
    with pytest.raises(ConfigError, match="override 'x=.*expand to more than"):
        build(TrainConfig, {}, ["x=" + "{" + _bomb(8).replace("\n", ", ") + "}"])


def test_yaml_anchors_that_expand_modestly_still_work_and_a_recursive_one_is_refused(tmp_path):
    path = tmp_path / "anchors.yaml"
    path.write_text("optim: &o {lr: 0.5}\nbase: &b [1, 2]\nagain: *b\n")
    assert load_yaml(path) == {"optim": {"lr": 0.5}, "base": [1, 2], "again": [1, 2]}
    path.write_text("a: &a [1, *a]\n")
    with pytest.raises(ConfigError, match="recursive alias"):
        load_yaml(path)
