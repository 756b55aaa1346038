"""Every registered tiny model: forward, backward, gradients, surface (timm's test_models habit)."""

import json

import pytest
import torch

import avfusion
from avfusion.errors import ConfigError
from avfusion.models import ModelConfig, get_model_config, list_models

TINY = list_models("*_tiny*")


def test_registry_has_every_scheme():
    names = set(list_models())
    required = {"mbt_base", "mbt_base_late", "mbt_base_xattn", "mbt_base_early", "zorro_vit_base",
                "zorro_vit_base_independent", "zorro_vit_base_input_fusion", "zorro_vit_base_bottleneck_mask"}
    assert required <= names
    for base in (n for n in names if "_base" in n):
        assert base.replace("_base", "_tiny") in names, f"{base} has no tiny variant"


def test_mbt_base_is_the_official_audioset_setting():
    c = get_model_config("mbt_base")
    assert (c.depth, c.embed_dim, c.num_heads, c.mlp_dim) == (12, 768, 12, 3072)
    assert (c.num_frames, c.image_size, c.tubelet) == (32, (224, 224), (2, 16, 16))
    assert (c.spec_size, c.spec_patch) == ((800, 128), (16, 16))
    assert (c.fusion, c.fusion_layer, c.num_bottlenecks, c.num_classes, c.share_weights) == ("bottleneck", 8, 4, 527, False)
    assert get_model_config("mbt_base_late").fusion_layer == 12
    assert (get_model_config("mbt_base_xattn").fusion, get_model_config("mbt_base_xattn").fusion_layer) == ("xattn", 8)
    early = get_model_config("mbt_base_early")
    assert early.share_weights and early.fusion_layer == 0 and early.fusion == "concat"


@pytest.mark.parametrize("name", TINY)
def test_forward_backward_every_parameter_gets_a_gradient(name, randomize):
    model = randomize(avfusion.create_model(name)).train()
    inputs = model.example_inputs(2)
    out = model(inputs)
    C = model.cfg.num_classes
    assert out.logits.shape == (2, C)
    assert all(v.shape == (2, C) for v in out.outputs.values())
    D = model.num_features  # hierarchical backbones (Zorro-Swin, -HiP) end wider than embed_dim
    assert all(v.shape == (2, D) for v in out.features.values())
    assert torch.isfinite(out.logits).all()
    loss = sum(o.float().square().mean() for o in out.outputs.values())
    loss.backward()
    for pname, p in model.named_parameters():
        if p.numel() == 0:
            continue
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{pname} has an all-zero gradient"


@pytest.mark.parametrize("name", TINY)
def test_dense_reference_equals_auto(name, randomize):
    model = randomize(avfusion.create_model(name)).eval()
    dense = randomize(avfusion.create_model(name, attn_impl="dense")).eval()
    inputs = model.example_inputs(2)
    with torch.no_grad():
        a, d = model(inputs), dense(inputs)
    for k in a.outputs:
        torch.testing.assert_close(a.outputs[k], d.outputs[k], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["mbt_tiny", "zorro_vit_tiny"])
def test_grad_checkpointing_gives_same_gradients(name, randomize):
    model = randomize(avfusion.create_model(name)).train()
    inputs = model.example_inputs(2)
    grads = []
    for ckpt in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(ckpt)
        model(inputs).logits.sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-4, atol=1e-5)


def test_heads_are_zero_initialised_like_scenic():
    model = avfusion.create_model("mbt_tiny")
    assert torch.count_nonzero(model.head.weight) == 0
    out = model(model.example_inputs(1))
    assert torch.count_nonzero(out.logits) == 0


def test_reset_classifier():
    for name in ("mbt_tiny", "zorro_vit_tiny"):
        model = avfusion.create_model(name)
        model.reset_classifier(3, ["a", "b", "c"])
        out = model(model.example_inputs(2))
        assert out.logits.shape == (2, 3) and all(v.shape == (2, 3) for v in out.outputs.values())
        assert model.cfg.num_classes == 3 and model.cfg.class_names == ["a", "b", "c"]


def test_overrides_and_errors():
    m = avfusion.create_model("mbt_tiny", fusion_layer=1, num_bottlenecks=2, num_classes=5)
    assert m.cfg.fusion_layer == 1 and m.bottleneck.shape[1] == 3  # + scenic's extra token
    z = avfusion.create_model("zorro_vit_tiny", num_fusion_tokens=6)
    assert z.fusion_tokens.shape[1] == 6
    with pytest.raises(ConfigError, match="unknown ModelConfig key"):
        get_model_config("mbt_tiny", fusion_layr=3)
    with pytest.raises(ConfigError, match="fusion_layer must be in"):
        get_model_config("mbt_tiny", fusion_layer=9)
    with pytest.raises(ConfigError, match="needs share_weights=True"):
        get_model_config("mbt_tiny", fusion="concat")
    with pytest.raises(ConfigError, match="unknown model"):
        get_model_config("mbt_huge")
    with pytest.raises(ConfigError, match="class_splits"):
        get_model_config("mbt_tiny", class_splits={"verb": 3, "noun": 4})
    assert get_model_config("mbt_tiny", class_splits={"verb": 3, "noun": 4}, num_classes=7,
                            task="multihead").num_classes == 7
    with pytest.raises(ValueError, match="multihead"):
        get_model_config("mbt_tiny", class_splits={"verb": 3, "noun": 4}, num_classes=7)


@pytest.mark.parametrize("overrides, match", [
    ({"image_size": 5}, r"image_size must be 2 positive integers.*got 5"),
    ({"tubelet": [0, 16, 16]}, "tubelet must be 3 positive integers"),
    ({"spec_size": [192]}, "spec_size must be 2 positive integers"),
    ({"depths": "abc"}, "depths must be a list of positive integers"),
    ({"image_size": [50, 48]}, r"must be multiples of tubelet"),
    ({"spec_size": [190, 32]}, r"spec_size \(190, 32\) must be a multiple of spec_patch"),
    ({"num_frames": 0}, "num_frames must be >= 1"),
    ({"embed_dim": 0}, "embed_dim"),
    ({"modalities": ["audio", "sound"]}, "modalities must be among"),
    ({"class_splits": 3}, "class_splits must map head names"),
    ({"drop_path_rate": 1.5}, r"dropout rates must be in \[0, 1\)"),
    ({"drop_rate": "abc"}, "config key 'drop_rate' expects float"),
    ({"attn_impl": "fast"}, "attn_impl must be one of"),
    ({"eval_output": "nope"}, None),  # checked when the model is built (the heads depend on the family)
    ({"preprocess.nokey": 1}, "unknown PreprocessConfig key"),
    ({"preprocess": 5}, "preprocess must be a mapping"),
])
def test_bad_overrides_are_config_errors_naming_the_key(overrides, match):
    name = "zorro_vit_tiny" if "eval_output" in overrides else "mbt_tiny"
    with pytest.raises(ConfigError, match=match or "eval_output must be one of"):
        avfusion.create_model(name, **overrides)


def test_a_modality_name_alone_is_one_modality():
    assert get_model_config("mbt_tiny", modalities="audio").modalities == ("audio",)


def test_config_json_round_trip():
    c = get_model_config("zorro_vit_tiny", class_names=[str(i) for i in range(10)], **{"preprocess.fps": 30.0})
    d = json.loads(json.dumps(c.to_dict()))
    assert ModelConfig.from_dict(d) == c
    assert c.preprocess.fps == 30.0


def test_input_errors_are_clear():
    model = avfusion.create_model("mbt_tiny")
    with pytest.raises(ValueError, match="none of this model.s modalities"):
        model({})
    with pytest.raises(ValueError, match="unknown input key"):
        model({"rgb": torch.zeros(1)})
    x = model.example_inputs(2)
    with pytest.raises(ValueError, match="batch sizes differ"):
        model({"audio": x["audio"], "video": x["video"][:1]})


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mbt_base", "zorro_vit_base"])
def test_base_models_forward(name):
    model = avfusion.create_model(name).eval()
    with torch.no_grad():
        out = model(model.example_inputs(1))
    assert out.logits.shape == (1, 527) and torch.isfinite(out.logits).all()
