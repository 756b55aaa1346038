"""Every shipped config loads into TrainConfig and builds its model (on the meta device)."""

from pathlib import Path

import pytest
import torch

from avfusion.models import build_model, get_model_config
from avfusion.train.config import TrainConfig
from avfusion.utils.dataclass_config import build, load_yaml

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


def test_configs_exist():
    assert len(CONFIGS) >= 8


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_loads_and_builds(path):
    cfg = build(TrainConfig, load_yaml(path))
    extra = {}
    if cfg.data.task == "multihead":
        extra = dict(num_classes=397, class_splits={"verb": 97, "noun": 300}, task="multihead")
    mcfg = get_model_config(cfg.model, **{**cfg.model_overrides, **extra})
    with torch.device("meta"):
        model = build_model(mcfg)
    assert model.num_params() > 1e6


def test_mbt_audioset_recipe_matches_the_paper():
    cfg = build(TrainConfig, load_yaml(Path(__file__).parents[2] / "configs" / "mbt_audioset_mini.yaml"))
    assert (cfg.optim.name, cfg.optim.lr, cfg.schedule.name, cfg.schedule.epochs) == ("sgd", 0.5, "cosine", 50)
    assert (cfg.data.batch_size, cfg.data.mixup_alpha, cfg.loss.label_smoothing) == (64, 0.5, 0.3)
    assert cfg.model_overrides["drop_path_rate"] == 0.3 and cfg.data.eval_clips == 4
    assert cfg.data.augment.freq_mask > 0 and cfg.data.augment.time_mask > 0  # SpecAugment on


def test_unknown_config_key_is_refused():
    with pytest.raises(ValueError, match="unknown config key"):
        build(TrainConfig, {"optim": {"lrate": 0.1}})
    with pytest.raises(ValueError, match="optim.name"):
        build(TrainConfig, {}, ["optim.name=adam"])


def test_scalar_overrides_are_typed():
    # YAML 1.1 reads "1e-3" as a string; a float field gets the float, not the string.
    cfg = build(TrainConfig, {}, ["optim.lr=1e-3", "run.max_steps=5", "run.out=2026", "optim.weight_decay=0"])
    assert cfg.optim.lr == 0.001 and isinstance(cfg.optim.lr, float)
    assert cfg.run.out == "2026" and isinstance(cfg.optim.weight_decay, float)
    for bad in ("optim.lr=fast", "run.max_steps=2.5", "run.max_steps=[1]"):
        with pytest.raises(ValueError, match="expects"):
            build(TrainConfig, {}, [bad])


def test_model_overrides_are_typed():
    cfg = get_model_config("mbt_tiny", drop_path_rate="1e-1")
    assert cfg.drop_path_rate == 0.1
    with pytest.raises(ValueError, match="expects int"):
        get_model_config("mbt_tiny", depth="four")
