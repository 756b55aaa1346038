"""The model surface every family shares (timm's): forward_features -> tokens with their layout,
forward_head(x, pre_logits), and configs that validate exactly when they build."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file

import avfusion
from avfusion.errors import ConfigError
from avfusion.layers.masks import TokenType
from avfusion.models import AVModel, Tokens, build_model, get_model_config, list_models
from avfusion.models.pretrained import CONFIG_NAME, WEIGHTS_NAME, load_pretrained, save_pretrained

TINY = list_models("*_tiny*")


def _model(name: str, **overrides) -> AVModel:
    torch.manual_seed(0)
    return avfusion.create_model(name, head_zero_init=False, **overrides).eval()


def _inputs(model: AVModel, batch: int = 2) -> dict[str, torch.Tensor]:
    return model.example_inputs(batch, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", TINY)
def test_forward_is_features_then_head(name: str) -> None:
    model = _model(name)
    x = _inputs(model)
    with torch.no_grad():
        out = model(x)
        tokens, notes = model.forward_features(x)
        head = model.forward_head(tokens)
        pooled = model.forward_head(tokens, pre_logits=True)
    assert isinstance(tokens, Tokens) and notes == out.notes
    torch.testing.assert_close(head.logits, out.logits, rtol=0, atol=0)
    assert head.outputs.keys() == out.outputs.keys() and head.notes == []
    assert pooled.keys() == out.features.keys()
    for k in pooled:
        torch.testing.assert_close(pooled[k], out.features[k], rtol=0, atol=0)
        assert pooled[k].shape == (2, model.num_features)
    # One definition, so one signature, on every family.
    assert type(model).forward_head is AVModel.forward_head


@pytest.mark.parametrize("name", TINY)
def test_tokens_carry_their_layout(name: str) -> None:
    model = _model(name)
    x = _inputs(model)
    with torch.no_grad():
        tokens, _ = model.forward_features(x)
    B, L, D = tokens.x.shape
    assert (B, D) == (2, model.num_features)
    assert tokens.present == model.cfg.modalities
    # Groups tile [0, L) in order, and the type ids follow them.
    pos = 0
    for seg in tokens.segments:
        assert seg.start == pos and seg.stop > seg.start
        pos = seg.stop
    assert pos == L
    ids = tokens.type_ids()
    for name_, seg in tokens.groups.items():
        assert (ids[seg.start:seg.stop] == int(seg.type)).all()
        assert tokens[name_].shape == (2, seg.stop - seg.start, D)
    for m in tokens.present:
        assert tokens.groups[m].type == {"audio": TokenType.AUDIO, "video": TokenType.VIDEO}[m]
        if m in tokens.grids:  # patch tokens on a grid (latents lie on none)
            assert math.prod(tokens.grids[m]) == tokens.groups[m].stop - tokens.groups[m].start


def test_layouts_per_family() -> None:
    def groups(name: str, **given) -> list[str]:
        model = _model(name)
        x = _inputs(model)
        with torch.no_grad():
            return list(model.forward_features({k: v for k, v in x.items() if k in given or not given})[0].groups)

    assert groups("mbt_tiny") == ["audio_cls", "audio", "video_cls", "video", "bottleneck"]
    assert groups("mbt_tiny_late") == ["audio_cls", "audio", "video_cls", "video"]
    assert groups("mbt_tiny_early") == ["audio_cls", "audio", "video_cls", "video"]
    assert groups("mbt_tiny", audio=True) == ["audio_cls", "audio"]  # unimodal run: no bottleneck
    assert groups("zorro_vit_tiny") == ["audio", "video", "fusion"]
    assert groups("zorro_vit_tiny", video=True) == ["video", "fusion"]
    assert groups("zorro_vit_tiny_independent") == ["audio", "video"]
    assert groups("zorro_hip_tiny") == ["audio", "video", "fusion"]  # the last stage's latents
    swin = _model("zorro_swin_tiny")
    with torch.no_grad():
        t, _ = swin.forward_features(_inputs(swin))
    assert t.grids == {"audio": (12, 4), "video": (4, 4, 4)}  # after one 2 x 2 merge
    assert t.groups["fusion"].stop - t.groups["fusion"].start == 4


def test_mbt_pools_the_cls_tokens() -> None:
    model = _model("mbt_tiny")
    with torch.no_grad():
        tokens, _ = model.forward_features(_inputs(model))
        pooled = model.forward_head(tokens, pre_logits=True)
    for m in ("audio", "video"):
        torch.testing.assert_close(pooled[m], tokens[f"{m}_cls"][:, 0], rtol=0, atol=0)


# -- configs that validate build, and those that would not build are refused ------------------
@pytest.mark.parametrize("name, overrides, key", [
    ("zorro_vit_tiny", {"fusion": "all", "num_fusion_tokens": 0}, "eval_output"),
    ("zorro_vit_tiny_input_fusion", {"num_fusion_tokens": 0}, "eval_output"),
    ("zorro_vit_tiny_independent", {"eval_output": "fusion"}, "eval_output"),
    ("zorro_vit_tiny", {"fusion": "zorro", "num_fusion_tokens": 0}, "num_fusion_tokens"),
    ("mbt_tiny", {"eval_output": "nope"}, "eval_output"),
    ("zorro_swin_tiny", {"window_size": (2, 3, 3)}, "window_size"),
    ("zorro_swin_tiny", {"spec_window": (5, 4)}, "spec_window"),
    ("zorro_swin_tiny", {"depths": (1, 1, 1)}, "depths"),
    ("zorro_hip_tiny", {"embed_dim": 48}, "stage_dims"),
    ("zorro_hip_tiny", {"stage_dims": (32, 40)}, "stage_dims"),  # head width 16
    ("mbt_tiny", {"num_bottlenecks": 0, "bottleneck_extra_token": False}, "bottleneck"),
])
def test_configs_that_would_not_build_are_refused_naming_the_key(name: str, overrides: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        get_model_config(name, **overrides)


def test_input_fusion_without_fusion_tokens_is_valid_with_another_output() -> None:
    model = _model("zorro_vit_tiny_input_fusion", num_fusion_tokens=0, eval_output="global")
    out = model(_inputs(model))
    assert set(out.outputs) == {"audio", "video", "global"} and torch.isfinite(out.logits).all()


@pytest.mark.parametrize("name", list_models())
def test_every_registered_config_builds(name: str) -> None:
    with torch.device("meta"):  # no memory, no compute: the base models too
        model = build_model(get_model_config(name))
    assert model.num_params() > 0


# -- no empty parameters; checkpoints from before still load ---------------------------------
def test_no_zero_size_parameters() -> None:
    for name in TINY:
        empty = [n for n, p in _model(name).named_parameters() if p.numel() == 0]
        assert not empty, (name, empty)
    assert _model("zorro_vit_tiny_independent").fusion_tokens is None


def test_old_checkpoint_with_empty_fusion_tokens_loads(tmp_path) -> None:
    """Checkpoints saved before the fix hold a (1, 0, D) 'fusion_tokens': mapped away on load."""
    model = _model("zorro_vit_tiny_independent")
    old = {**model.state_dict(), "fusion_tokens": torch.zeros(1, 0, model.cfg.embed_dim)}
    fresh = _model("zorro_vit_tiny_independent")
    fresh.load_state_dict(old, strict=True)  # what training-state resume does
    # A model directory written by the old code.
    directory = save_pretrained(model, tmp_path / "m")
    save_file({k: v.contiguous() for k, v in old.items()}, str(directory / WEIGHTS_NAME))
    assert (directory / CONFIG_NAME).is_file()
    loaded = load_pretrained(directory)
    x = _inputs(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model(x).logits, rtol=0, atol=0)
    # A non-empty stray tensor is still an error, not silently dropped.
    with pytest.raises(RuntimeError, match="fusion_tokens"):
        fresh.load_state_dict({**old, "fusion_tokens": torch.zeros(1, 2, model.cfg.embed_dim)}, strict=True)


def test_state_dict_keys_are_unchanged_by_the_surface() -> None:
    """Names the converters and saved checkpoints rely on (timm's ViT layout)."""
    keys = set(_model("mbt_tiny").state_dict())
    assert {"tokens.embed.audio.proj.weight", "tokens.cls_token.video", "tokens.pos_embed.audio", "bottleneck",
            "blocks.audio.0.attn.qkv.weight", "norm.weight", "head.weight"} <= keys
    keys = set(_model("zorro_vit_tiny").state_dict())
    assert {"tokens.embed.video.proj.weight", "tokens.pos_embed.video", "fusion_tokens", "blocks.0.attn.qkv.weight",
            "readout.query.global", "readout.block.attn.kv.weight", "head.fusion.weight"} <= keys
