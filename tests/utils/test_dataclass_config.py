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
