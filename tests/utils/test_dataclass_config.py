"""Typed dataclass configs from YAML files and dicts (utils/dataclass_config.py)."""

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
