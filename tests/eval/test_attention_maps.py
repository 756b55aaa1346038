"""Attention maps (eval/attention.py) read the probabilities the attention module used, under
its mask: checked against a hand computation before and after ``fusion_layer``, for MBT's
bottlenecks, and for models with nothing to map."""

from __future__ import annotations

import pytest
import torch

import avfusion
from avfusion.errors import ConfigError
from avfusion.eval.attention import fusion_attention
from avfusion.layers import keep_attention
from avfusion.layers.masks import RULES, TokenType, segments_of, self_mask


def _model(name: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    model = avfusion.create_model(name, **overrides).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # random everything, so no zero-initialised part hides a wrong map
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def _block_input(model: torch.nn.Module, attn: torch.nn.Module, inputs: dict) -> torch.Tensor:
    seen = []
    handle = attn.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        handle.remove()
    return seen


def _probs_by_hand(attn, x: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    B, L, D = x.shape
    q, k, _ = attn.qkv(x).reshape(B, L, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    s = q @ k.transpose(-2, -1) * attn.head_dim ** -0.5  # (B, h, L, L)
    if allowed is not None:
        s = s.masked_fill(~allowed, float("-inf"))
    return s.softmax(-1)


@pytest.mark.parametrize("layer", [0, 1, 2, 3])
def test_zorro_maps_under_the_mask_of_each_layer(layer: int) -> None:
    model = _model("zorro_vit_tiny", fusion_layer=2)  # layers 0, 1 unimodal; 2, 3 Zorro routing
    x = model.example_inputs(1, generator=torch.Generator().manual_seed(1))
    maps = fusion_attention(model, x, layer)
    assert maps["audio"].shape == (12, 4) and maps["video"].shape == (4, 4, 4)
    (h,) = _block_input(model, model.blocks[layer].attn, x)  # (1, 48 + 64 + 4, D)
    segs = segments_of([TokenType.AUDIO, TokenType.VIDEO, TokenType.FUSION], [48, 64, 4])
    rule = RULES["unimodal"] if layer < 2 else RULES["zorro"]
    with torch.no_grad():
        p = _probs_by_hand(model.blocks[layer].attn, h, self_mask(segs, rule).dense())
    rows = p[0, :, 112:].mean(dim=(0, 1))  # fusion rows, mean over heads and tokens
    torch.testing.assert_close(maps["audio"].flatten(), rows[:48], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(maps["video"].flatten(), rows[48:112], rtol=1e-5, atol=1e-7)
    total = maps["audio"].sum() + maps["video"].sum()
    if layer < 2:  # fusion tokens read only fusion tokens before the fusion layer
        assert total == 0
    else:  # the rest of each row's mass is on the fusion tokens themselves
        assert 0 < total < 1
        torch.testing.assert_close(total + rows[112:].sum(), torch.tensor(1.0))
        assert (maps["audio"] > 0).all() and (maps["video"] > 0).all()


def test_zorro_maps_with_one_modality() -> None:
    model = _model("zorro_vit_tiny")
    x = model.example_inputs(1)
    maps = fusion_attention(model, {"video": x["video"]})
    assert set(maps) == {"video"} and torch.isfinite(maps["video"]).all() and 0 < maps["video"].sum() < 1


@pytest.mark.parametrize("name, overrides", [
    ("zorro_vit_tiny_independent", {}),
    ("zorro_vit_tiny_input_fusion", {"num_fusion_tokens": 0, "eval_output": "global"}),
    ("mbt_tiny_late", {}),
    ("mbt_tiny_xattn", {}),
    ("zorro_swin_tiny", {}),
])
def test_nothing_to_map_is_a_config_error_not_nan(name: str, overrides: dict) -> None:
    model = _model(name, **overrides)
    with pytest.raises(ConfigError):
        fusion_attention(model, model.example_inputs(1))


def test_mbt_bottleneck_maps() -> None:
    model = _model("mbt_tiny")  # fusion_layer 2 of 4, 4 + 1 bottleneck tokens
    x = model.example_inputs(1, generator=torch.Generator().manual_seed(1))
    maps = fusion_attention(model, x, layer=3)
    for m, n, grid in (("audio", 48, (12, 4)), ("video", 64, (4, 4, 4))):
        attn = model.blocks[m][3].attn
        (h,) = _block_input(model, attn, x)  # (1, 1 + N_m + 5, D): [CLS ; modality ; bottleneck]
        assert h.shape[1] == 1 + n + 5
        with torch.no_grad():
            p = _probs_by_hand(attn, h, None)[0, :, -5:].mean(dim=(0, 1))
        assert maps[m].shape == grid
        torch.testing.assert_close(maps[m].flatten(), p[1:1 + n], rtol=1e-5, atol=1e-7)
        assert 0 < maps[m].sum() < 1
    with pytest.raises(ConfigError, match="before the fusion layer"):
        fusion_attention(model, x, layer=1)
    with pytest.raises(ConfigError, match="without bottlenecks"):
        fusion_attention(model, {"audio": x["audio"]}, layer=3)


def test_mbt_maps_with_shared_weights_take_each_modality_call() -> None:
    model = _model("mbt_tiny", share_weights=True)  # one block serves both modalities
    x = model.example_inputs(1, generator=torch.Generator().manual_seed(1))
    maps = fusion_attention(model, x, layer=2)
    attn = model.blocks["shared"][2].attn
    inputs = _block_input(model, attn, x)  # audio's call, then video's
    for (m, n), h in zip((("audio", 48), ("video", 64)), inputs):
        with torch.no_grad():
            p = _probs_by_hand(attn, h, None)[0, :, -5:].mean(dim=(0, 1))
        torch.testing.assert_close(maps[m].flatten(), p[1:1 + n], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("block", [0, 1])  # plain and shifted windows
def test_swin_blocks_keep_their_masked_probabilities(block: int) -> None:
    """A Swin block asked for maps takes the dense reference: zero outside its window / routing,
    rows summing to 1, and the same output as the fast path."""
    model = _model("zorro_swin_tiny")
    x = model.example_inputs(1, generator=torch.Generator().manual_seed(1))
    attn = model.stages[0].blocks[block].attn
    with torch.no_grad():
        fast = model(x).outputs
        with keep_attention(attn):
            kept = model(x).outputs
    (probs,) = attn.kept  # (1, h, L, L), L = 24 x 8 audio + 4 x 8 x 8 video + 4 fusion tokens
    assert probs.shape[-1] == 192 + 256 + 4
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]))
    assert (probs[0, :, :192, 192:] == 0).all() and (probs[0, :, 192:448, :192] == 0).all()  # no modality leak
    assert (probs[0, :, :448, 448:] == 0).all()  # modality tokens never read fusion tokens
    assert (probs[0, :, 448:] > 0).all()  # fusion tokens read everything
    assert 0 < int((probs[0, 0, 0, :192] > 0).sum()) <= 16  # an audio token reads its 4 x 4 window only
    for k in fast:
        torch.testing.assert_close(kept[k], fast[k], rtol=1e-4, atol=1e-5)
