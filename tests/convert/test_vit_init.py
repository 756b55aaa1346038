"""ImageNet ViT initialisation, checked tensor by tensor on ViT checkpoints built here.

A random timm-layout ViT (width 64, 4 layers, 4 heads, 8x8 patches on 32x32 images: a 4x4 grid)
is written as .safetensors / .pth, and in the original-ViT, big_vision and Hugging Face layouts
(each derived from the same tensors), then loaded into the tiny MBT and Zorro models.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import avfusion
from avfusion.convert.vit import init_from_vit, load_vit_state_dict, resample_grid

D, DEPTH, HEADS, MLP, P, G = 64, 4, 4, 128, 8, 4  # matches the *_tiny models (tubelet (2, 8, 8))
BLOCK = ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
         "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
         "mlp.fc2.weight", "mlp.fc2.bias")


def timm_vit(seed: int = 0, dim: int = D, depth: int = DEPTH, patch: int = P, grid: int = G,
             classes: int = 1000) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    sd = {"cls_token": r(1, 1, dim), "pos_embed": r(1, 1 + grid * grid, dim),
          "patch_embed.proj.weight": r(dim, 3, patch, patch), "patch_embed.proj.bias": r(dim),
          "norm.weight": r(dim), "norm.bias": r(dim), "head.weight": r(classes, dim), "head.bias": r(classes)}
    for i in range(depth):
        sd |= {f"blocks.{i}.norm1.weight": r(dim), f"blocks.{i}.norm1.bias": r(dim),
               f"blocks.{i}.attn.qkv.weight": r(3 * dim, dim), f"blocks.{i}.attn.qkv.bias": r(3 * dim),
               f"blocks.{i}.attn.proj.weight": r(dim, dim), f"blocks.{i}.attn.proj.bias": r(dim),
               f"blocks.{i}.norm2.weight": r(dim), f"blocks.{i}.norm2.bias": r(dim),
               f"blocks.{i}.mlp.fc1.weight": r(MLP, dim), f"blocks.{i}.mlp.fc1.bias": r(MLP),
               f"blocks.{i}.mlp.fc2.weight": r(dim, MLP), f"blocks.{i}.mlp.fc2.bias": r(dim)}
    return sd


@pytest.fixture(scope="module")
def vit() -> dict[str, torch.Tensor]:
    return timm_vit()


@pytest.fixture(scope="module")
def vit_file(vit: dict[str, torch.Tensor], tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("vit") / "vit_tiny.safetensors"
    save_file(vit, p)
    return p


def check_streams_model(model: torch.nn.Module, vit: dict[str, torch.Tensor], inflate: str = "central") -> None:
    sd = model.state_dict()
    cfg = model.cfg
    stacks = ["shared"] if cfg.share_weights else ["audio", "video"]
    for i in range(DEPTH):
        for s in stacks:
            for name in BLOCK:
                assert torch.equal(sd[f"blocks.{s}.{i}.{name}"], vit[f"blocks.{i}.{name}"]), (s, i, name)
    assert torch.equal(sd["norm.weight"], vit["norm.weight"]) and torch.equal(sd["norm.bias"], vit["norm.bias"])
    # tubelet (D, 3, 2, 8, 8) from the (D, 3, 8, 8) image kernel
    w, k3 = vit["patch_embed.proj.weight"], sd["tokens.embed.video.proj.weight"]
    assert k3.shape == (D, 3, 2, P, P)
    if inflate == "central":  # scenic: frame t // 2 = 1 holds the kernel, frame 0 is zero
        assert torch.equal(k3[:, :, 1], w) and torch.count_nonzero(k3[:, :, 0]) == 0
    else:
        assert torch.allclose(k3[:, :, 0], w / 2) and torch.allclose(k3[:, :, 1], w / 2)
    # spectrogram (D, 1, 8, 8): a 1-channel input tiled to RGB equals the channel-summed kernel
    assert torch.allclose(sd["tokens.embed.audio.proj.weight"][:, 0], w.sum(1))
    for m in ("audio", "video"):
        assert torch.equal(sd[f"tokens.embed.{m}.proj.bias"], vit["patch_embed.proj.bias"])
        assert torch.equal(sd[f"tokens.cls_token.{m}"], vit["cls_token"])
        assert torch.equal(sd[f"tokens.pos_embed.{m}"][:, 0], vit["pos_embed"][:, 0])  # CLS position
    grid = vit["pos_embed"][0, 1:].reshape(G, G, D)
    # video grid (4, 4, 4) = (T', H', W'): the 4x4 table, unchanged, at every time step
    pv = sd["tokens.pos_embed.video"][0, 1:].reshape(4, G, G, D)
    for ti in range(4):
        assert torch.equal(pv[ti], grid)
    # spectrogram grid (12, 4) = (time, mel): corner-aligned bilinear, as scenic's scipy zoom
    # (test_scenic_resampling_is_scipy_zoom checks that equivalence)
    expect = F.interpolate(grid.permute(2, 0, 1)[None], size=(12, 4), mode="bilinear", align_corners=True)
    pa = sd["tokens.pos_embed.audio"][0, 1:].reshape(12, 4, D)
    torch.testing.assert_close(pa, expect[0].permute(1, 2, 0))
    # scenic starts the bottleneck from the positions: [CLS ; 4 tokens = the 4x4 grid zoomed to 2x2],
    # which (corner-aligned) are exactly the grid's corners
    assert ("bottleneck" in sd) == (cfg.fusion == "bottleneck" and cfg.fusion_layer < cfg.depth)
    if "bottleneck" in sd:
        bn = sd["bottleneck"][0]
        assert torch.equal(bn[0], vit["pos_embed"][0, 0])
        torch.testing.assert_close(bn[1:], torch.stack([grid[0, 0], grid[0, -1], grid[-1, 0], grid[-1, -1]]))
    assert torch.count_nonzero(sd["head.weight"]) == 0  # the classifier is not the ViT's


@pytest.mark.parametrize("name", ["mbt_tiny", "mbt_tiny_shared", "mbt_tiny_late", "mbt_tiny_xattn", "mbt_tiny_early"])
def test_timm_safetensors_into_mbt(name: str, vit: dict, vit_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="avfusion.convert.vit"):
        model = avfusion.create_model(name, pretrained_backbone=vit_file)
    check_streams_model(model, vit)
    text = caplog.text
    assert "unexpected (ViT tensors not used): head.bias, head.weight\n" in text
    assert "missing (kept at random init): head.weight, head.bias\n" in text


def test_average_inflation_and_pth(vit: dict, tmp_path: Path) -> None:
    torch.save({"model": vit}, tmp_path / "vit.pth")
    model = avfusion.create_model("mbt_tiny", pretrained_backbone=tmp_path / "vit.pth",
                                  pretrained_backbone_inflate="average")
    check_streams_model(model, vit, inflate="average")


@pytest.mark.parametrize("new", [(50, 8), (12, 4), (2, 2), (3, 7), (1, 5)])
def test_scenic_resampling_is_scipy_zoom(new: tuple[int, int]) -> None:
    """scenic's interpolate_positional_embeddings is scipy.ndimage.zoom(grid, order=1)."""
    ndimage = pytest.importorskip("scipy.ndimage")
    grid = torch.randn(1, 14 * 14, 6, dtype=torch.float64)
    ours = resample_grid(grid, (14, 14), new).reshape(*new, 6).numpy()
    theirs = ndimage.zoom(grid.reshape(14, 14, 6).numpy(), (new[0] / 14, new[1] / 14, 1), order=1)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-10)


def test_timm_position_resampling_option(vit: dict, vit_file: Path) -> None:
    model = avfusion.create_model("mbt_tiny")
    init_from_vit(model, vit_file, pos_resample="timm")
    grid = vit["pos_embed"][0, 1:].reshape(G, G, D)
    expect = F.interpolate(grid.permute(2, 0, 1)[None], size=(12, 4), mode="bilinear", align_corners=False)
    pa = model.state_dict()["tokens.pos_embed.audio"][0, 1:].reshape(12, 4, D)
    torch.testing.assert_close(pa, expect[0].permute(1, 2, 0))
    with pytest.raises(ValueError, match="pos_resample must be one of"):
        init_from_vit(model, vit_file, pos_resample="nearest")


def test_static_clip_embeds_like_the_image(vit: dict, vit_file: Path) -> None:
    """What the inflations are for: with 'average', a clip of one repeated frame gives each
    tubelet the ViT's patch embedding of that frame."""
    model = avfusion.create_model("mbt_tiny", pretrained_backbone=vit_file, pretrained_backbone_inflate="average")
    frame = torch.randn(1, 3, 32, 32)
    clip = frame[:, :, None].expand(1, 3, 8, 32, 32)
    with torch.no_grad():
        tok = model.tokens.embed["video"](clip)  # (1, 4 * 16, D)
        img = F.conv2d(frame, vit["patch_embed.proj.weight"], vit["patch_embed.proj.bias"], stride=P)
    img = img.flatten(2).transpose(1, 2)  # (1, 16, D)
    torch.testing.assert_close(tok, img.repeat(1, 4, 1), rtol=1e-4, atol=1e-4)


def test_zorro_gets_blocks_but_no_cls(vit: dict, vit_file: Path) -> None:
    model = avfusion.create_model("zorro_vit_tiny", pretrained_backbone=vit_file)
    sd = model.state_dict()
    for i in range(DEPTH):
        for name in BLOCK:
            assert torch.equal(sd[f"blocks.{i}.{name}"], vit[f"blocks.{i}.{name}"])
    grid = vit["pos_embed"][0, 1:].reshape(G, G, D)
    assert torch.equal(sd["tokens.pos_embed.video"][0].reshape(4, G, G, D)[2], grid)  # no CLS slot
    report = init_from_vit(model, vit_file)
    assert "cls_token" in report.unexpected and "fusion_tokens" in report.missing
    assert any("CLS position is not used" in n for n in report.notes)


def test_width_mismatch_names_tensor_and_shapes(tmp_path: Path) -> None:
    save_file(timm_vit(dim=32), tmp_path / "narrow.safetensors")
    with pytest.raises(ValueError, match=r"'blocks\.audio\.0\.norm1\.weight' \(64,\) from ViT tensor "
                                         r"'blocks\.0\.norm1\.weight' \(32,\)"):
        avfusion.create_model("mbt_tiny", pretrained_backbone=tmp_path / "narrow.safetensors")


def test_patch_size_mismatch_is_refused(tmp_path: Path) -> None:
    save_file(timm_vit(patch=16, grid=2), tmp_path / "p16.safetensors")
    with pytest.raises(ValueError, match=r"tokens\.embed\.video\.proj\.weight' \(64, 3, 2, 8, 8\) from ViT tensor "
                                         r"'patch_embed\.proj\.weight' \(64, 3, 16, 16\)"):
        avfusion.create_model("mbt_tiny", pretrained_backbone=tmp_path / "p16.safetensors")


def test_deeper_vit_reports_unused_blocks(tmp_path: Path) -> None:
    save_file(timm_vit(depth=6), tmp_path / "deep.safetensors")
    model = avfusion.create_model("mbt_tiny")
    report = init_from_vit(model, tmp_path / "deep.safetensors")
    assert "blocks.4.norm1.weight" in report.unexpected and "blocks.5.mlp.fc2.bias" in report.unexpected
    assert not any(k.startswith("blocks.") for k in report.missing)
    assert "blocks.*.norm1.weight (x2)" in str(report)


# -- other file layouts, derived from the same timm tensors ----------------------------------------------
def to_flax_vit(sd: dict[str, torch.Tensor], style: str) -> dict[str, np.ndarray]:
    """timm -> original ViT ('vit': MHDPA_1 / LayerNorm_2 / MlpBlock_3, CLS slot in the positions) or
    big_vision ('big_vision': params/ prefix, _0 / _1 names, positions without the CLS slot)."""
    n = {k: v.numpy() for k, v in sd.items()}
    names = ("LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3") if style == "vit" \
        else ("LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0")
    hd = D // HEADS
    out = {"embedding/kernel": n["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
           "embedding/bias": n["patch_embed.proj.bias"], "cls": n["cls_token"],
           "Transformer/encoder_norm/scale": n["norm.weight"], "Transformer/encoder_norm/bias": n["norm.bias"],
           "head/kernel": n["head.weight"].T, "head/bias": n["head.bias"]}
    if style == "vit":  # positions cover the CLS slot
        out["Transformer/posembed_input/pos_embedding"] = n["pos_embed"]
    else:
        out["pos_embedding"] = n["pos_embed"][:, 1:]
    for i in range(DEPTH):
        b, pre = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        ln1, att, ln2, mlp = (pre + x for x in names)
        q, k, v = np.split(n[b + "attn.qkv.weight"], 3, axis=0)  # each (D, D) = (out, in)
        qb, kb, vb = np.split(n[b + "attn.qkv.bias"], 3)
        for nm, w_, b_ in (("query", q, qb), ("key", k, kb), ("value", v, vb)):
            out[f"{att}/{nm}/kernel"] = w_.T.reshape(D, HEADS, hd)
            out[f"{att}/{nm}/bias"] = b_.reshape(HEADS, hd)
        out[f"{att}/out/kernel"] = n[b + "attn.proj.weight"].T.reshape(HEADS, hd, D)
        out[f"{att}/out/bias"] = n[b + "attn.proj.bias"]
        out[f"{ln1}/scale"], out[f"{ln1}/bias"] = n[b + "norm1.weight"], n[b + "norm1.bias"]
        out[f"{ln2}/scale"], out[f"{ln2}/bias"] = n[b + "norm2.weight"], n[b + "norm2.bias"]
        out[f"{mlp}/Dense_0/kernel"], out[f"{mlp}/Dense_0/bias"] = n[b + "mlp.fc1.weight"].T, n[b + "mlp.fc1.bias"]
        out[f"{mlp}/Dense_1/kernel"], out[f"{mlp}/Dense_1/bias"] = n[b + "mlp.fc2.weight"].T, n[b + "mlp.fc2.bias"]
    if style.startswith("big_vision"):
        out = {f"params/{k}": v for k, v in out.items()}
    if style == "big_vision_scan":  # nn.scan stores one stacked array per block parameter
        blocks = [k for k in out if "/encoderblock_" in k]
        for k in [k for k in blocks if "/encoderblock_0/" in k]:
            out[k.replace("encoderblock_0", "encoderblock")] = np.stack(
                [out[k.replace("encoderblock_0", f"encoderblock_{i}")] for i in range(DEPTH)])
        for k in blocks:
            del out[k]
    return out


@pytest.mark.parametrize("style", ["vit", "big_vision", "big_vision_scan"])
def test_flax_npz_equals_timm(style: str, vit: dict, vit_file: Path, tmp_path: Path) -> None:
    flax_arrays = to_flax_vit(vit, style)
    assert any("encoderblock/" in k for k in flax_arrays) == (style == "big_vision_scan")
    np.savez(tmp_path / "vit.npz", **flax_arrays)
    w = load_vit_state_dict(tmp_path / "vit.npz")
    assert w.num_heads == HEADS and w.num_prefix_tokens == (1 if style == "vit" else 0)
    for k in vit:
        if k == "pos_embed" and style != "vit":
            torch.testing.assert_close(w.state_dict[k], vit[k][:, 1:])
        else:
            torch.testing.assert_close(w.state_dict[k], vit[k], rtol=0, atol=0, msg=k)
    a = avfusion.create_model("mbt_tiny", pretrained_backbone=tmp_path / "vit.npz").state_dict()
    b = avfusion.create_model("mbt_tiny", pretrained_backbone=vit_file).state_dict()
    for k in a:
        if k.startswith("head.") or k == "bottleneck":  # random init in both models
            continue
        if style != "vit" and k.startswith("tokens.pos_embed"):  # checked below
            continue
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    if style != "vit":  # no CLS position in big_vision: the CLS slot starts at zero
        assert torch.count_nonzero(a["tokens.pos_embed.video"][:, 0]) == 0
        torch.testing.assert_close(a["tokens.pos_embed.video"][:, 1:], b["tokens.pos_embed.video"][:, 1:])


def test_flax_npz_head_count_checked(vit: dict, tmp_path: Path) -> None:
    np.savez(tmp_path / "vit.npz", **to_flax_vit(vit, "vit"))
    with pytest.raises(ValueError, match="4 attention heads, the model 2"):
        avfusion.create_model("mbt_tiny", num_heads=2, pretrained_backbone=tmp_path / "vit.npz")


def test_hugging_face_layout_equals_timm(vit: dict, vit_file: Path, tmp_path: Path) -> None:
    hf = {"vit.embeddings.cls_token": vit["cls_token"], "vit.embeddings.position_embeddings": vit["pos_embed"],
          "vit.embeddings.patch_embeddings.projection.weight": vit["patch_embed.proj.weight"],
          "vit.embeddings.patch_embeddings.projection.bias": vit["patch_embed.proj.bias"],
          "vit.layernorm.weight": vit["norm.weight"], "vit.layernorm.bias": vit["norm.bias"],
          "classifier.weight": vit["head.weight"], "classifier.bias": vit["head.bias"]}
    ren = {"norm1": "layernorm_before", "attn.proj": "attention.output.dense", "norm2": "layernorm_after",
           "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}
    for i in range(DEPTH):
        for kind in ("weight", "bias"):
            q, k, v = vit[f"blocks.{i}.attn.qkv.{kind}"].chunk(3, dim=0)
            for nm, x in (("query", q), ("key", k), ("value", v)):
                hf[f"vit.encoder.layer.{i}.attention.attention.{nm}.{kind}"] = x.contiguous()
            for ours, theirs in ren.items():
                hf[f"vit.encoder.layer.{i}.{theirs}.{kind}"] = vit[f"blocks.{i}.{ours}.{kind}"]
    save_file(hf, tmp_path / "hf.safetensors")
    a = avfusion.create_model("mbt_tiny", pretrained_backbone=tmp_path / "hf.safetensors").state_dict()
    b = avfusion.create_model("mbt_tiny", pretrained_backbone=vit_file).state_dict()
    for k in a:
        if k != "bottleneck":
            assert torch.equal(a[k], b[k]), k
    report = init_from_vit(avfusion.create_model("mbt_tiny"), tmp_path / "hf.safetensors")
    assert report.unexpected == ["classifier.bias", "classifier.weight"]


def test_not_a_vit(tmp_path: Path) -> None:
    save_file({"foo": torch.zeros(2)}, tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match="not a ViT state dict"):
        avfusion.create_model("mbt_tiny", pretrained_backbone=tmp_path / "x.safetensors")
