"""Official scenic MBT checkpoints -> avfusion: parity with the official outputs.

The fixture (bottleneck fusion, Lf = 1) was produced by the official JAX code; every other
configuration the official model supports is checked against an independent NumPy
re-implementation of the official forward (tests/helpers/scenic_mbt_reference.py), which is itself checked
against the fixture first.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import avfusion
from avfusion.cli import main as avfusion_main
from avfusion.convert import convert_scenic_mbt, infer_layout, load_flax_msgpack
from avfusion.convert.safe_load import flatten_tree
from avfusion.convert.scenic_mbt import scenic_mbt_params
from helpers.scenic_mbt_reference import mbt_forward, random_mbt_params, to_flax_msgpack, train_state

TOL = 1e-4  # absolute, float32 (fixture README)


def convert_main(args: list[str]) -> int:
    """`avfusion convert ...` through the top level, which turns an expected failure into exit 2."""
    return avfusion_main(["convert", *args])


def run_avfusion(model: torch.nn.Module, rgb_nthwc: np.ndarray, spec_ntf: np.ndarray) -> dict[str, np.ndarray]:
    """Official inputs -> avfusion inputs: NTHWC -> (B, 3, T, H, W); the 1-channel spectrogram as is."""
    video = torch.from_numpy(np.ascontiguousarray(rgb_nthwc, dtype=np.float32)).permute(0, 4, 1, 2, 3)
    audio = torch.from_numpy(np.ascontiguousarray(spec_ntf, dtype=np.float32))
    with torch.no_grad():
        out = model({"video": video, "audio": audio})
    return {"logits": out.logits.numpy(), "logits_rgb": out.outputs["video"].numpy(),
            "logits_spectrogram": out.outputs["audio"].numpy()}


def max_diffs(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    keys = ("logits", "logits_rgb", "logits_spectrogram")
    return {k: float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in keys}


# -- the official fixture ------------------------------------------------------------------------
def test_numpy_reference_reproduces_official_fixture(scenic_fixture: Path) -> None:
    params = scenic_mbt_params(load_flax_msgpack(scenic_fixture / "checkpoint.msgpack"))
    io = np.load(scenic_fixture / "io.npz")
    ref = mbt_forward(params, io["rgb_nthwc"], io["spectrogram_ntf"], fusion_layer=1,
                      share_encoder=False, use_bottleneck=True)
    diffs = max_diffs(ref, io)
    assert max(diffs.values()) < TOL, diffs


def test_infer_layout_on_fixture(scenic_fixture: Path) -> None:
    cfg = json.loads((scenic_fixture / "config.json").read_text())
    flat = flatten_tree(scenic_mbt_params(load_flax_msgpack(scenic_fixture / "checkpoint.msgpack")))
    lay = infer_layout(flat)
    fh, fw, ft = cfg["patch_size_hwt"]
    assert (lay.embed_dim, lay.depth, lay.num_heads, lay.mlp_dim) == (
        cfg["hidden_size"], cfg["num_layers"], cfg["num_heads"], cfg["mlp_dim"])
    assert lay.tubelet == (ft, fh, fw) and lay.spec_patch == (fh, fw)
    assert lay.bottleneck_tokens == cfg["n_bottlenecks"] + 1 and lay.shared is cfg["share_encoder"]
    assert lay.num_classes == cfg["num_classes"]


def test_fixture_parity(scenic_fixture: Path) -> None:
    cfg = json.loads((scenic_fixture / "config.json").read_text())
    T, H, W = cfg["rgb_thw"]
    model = convert_scenic_mbt(scenic_fixture / "checkpoint.msgpack", cfg["fusion_layer"], num_frames=T,
                               image_size=(H, W), spec_size=tuple(cfg["spec_tf"]))
    assert model.cfg.fusion == "bottleneck" and model.cfg.num_bottlenecks == cfg["n_bottlenecks"]
    io = np.load(scenic_fixture / "io.npz")
    diffs = max_diffs(run_avfusion(model, io["rgb_nthwc"], io["spectrogram_ntf"]), io)
    assert max(diffs.values()) < TOL, diffs


def test_cli_fixture_round_trip(scenic_fixture: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = json.loads((scenic_fixture / "config.json").read_text())
    T, H, W = cfg["rgb_thw"]
    out = tmp_path / "mbt"
    args = ["scenic-mbt", str(scenic_fixture / "checkpoint.msgpack"), "--fusion-layer", "1", "--out", str(out),
            "--num-frames", str(T), "--image-size", str(H), str(W), "--spec-size", *map(str, cfg["spec_tf"])]
    assert convert_main(args) == 0
    assert "bottleneck from layer 1 of 3" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "convert.json", "model.safetensors"]
    assert json.loads((out / "config.json").read_text())["tubelet"] == [2, 4, 4]  # tuples stored as lists
    model = avfusion.load_pretrained(out)
    io = np.load(scenic_fixture / "io.npz")
    diffs = max_diffs(run_avfusion(model, io["rgb_nthwc"], io["spectrogram_ntf"]), io)
    assert max(diffs.values()) < TOL, diffs
    assert convert_main(args) == 2  # refuses to overwrite without --force
    assert convert_main(args + ["--force"]) == 0


def test_cli_wrong_sizes_say_what_to_pass(scenic_fixture: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    args = ["scenic-mbt", str(scenic_fixture / "checkpoint.msgpack"), "--fusion-layer", "1",
            "--out", str(tmp_path / "x"), "--image-size", "16", "16"]
    assert convert_main(args) == 2
    err = capsys.readouterr().err
    assert "--num-frames 4" in err and "--spec-size 4 128" in err  # 32 tokens each
    assert not (tmp_path / "x").exists()


def test_cli_fusion_layer_out_of_range(scenic_fixture: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["scenic-mbt", str(scenic_fixture / "checkpoint.msgpack"), "--fusion-layer", "4", "--out",
            str(tmp_path / "x"), "--num-frames", "4", "--image-size", "16", "16", "--spec-size", "32", "16"]
    assert convert_main(args) == 2
    assert "--fusion-layer must be in [0, 3]" in capsys.readouterr().err


def test_cli_labels(scenic_fixture: Path, tmp_path: Path) -> None:
    labels = tmp_path / "class_labels_indices.csv"
    rows = ["index,mid,display_name"] + [f'{i},/m/{i},"name {i}, x"' for i in (4, 0, 1, 2, 3)]
    labels.write_text("\n".join(rows) + "\n")
    args = ["scenic-mbt", str(scenic_fixture / "checkpoint.msgpack"), "--fusion-layer", "1", "--out",
            str(tmp_path / "m"), "--num-frames", "4", "--image-size", "16", "16", "--spec-size", "32", "16",
            "--labels", str(labels)]
    assert convert_main(args) == 0
    assert avfusion.load_pretrained(tmp_path / "m").cfg.class_names == [f"name {i}, x" for i in range(5)]


# -- every configuration the official model supports, against the NumPy reference ------------------
CONFIGS = {
    # name: (random_mbt_params kwargs, fusion_layer, expected avfusion fusion)
    "bottleneck_lf1": (dict(), 1, "bottleneck"),
    "bottleneck_early_lf0": (dict(), 0, "bottleneck"),
    "bottleneck_late_lfL": (dict(), 3, "bottleneck"),
    "vanilla_xattn_lf1": (dict(n_bottlenecks=None), 1, "xattn"),
    "vanilla_xattn_lf0": (dict(n_bottlenecks=None), 0, "xattn"),
    "late_no_bottleneck_lfL": (dict(n_bottlenecks=None), 3, "xattn"),
    "shared_concat_lf1": (dict(n_bottlenecks=None, share_encoder=True), 1, "concat"),
    "shared_concat_early_lf0": (dict(n_bottlenecks=None, share_encoder=True), 0, "concat"),
    "shared_late_lfL": (dict(n_bottlenecks=None, share_encoder=True), 3, "concat"),
    "shared_bottleneck_lf2": (dict(share_encoder=True), 2, "bottleneck"),
    "non_square_patches": (dict(patches=(4, 2, 2), rgb_thw=(4, 12, 8), spec_tf=(24, 10)), 1, "bottleneck"),
    "tubelet_t1": (dict(patches=(4, 4, 1), rgb_thw=(3, 8, 12)), 2, "bottleneck"),
    "tubelet_t1_non_square_xattn": (dict(patches=(2, 4, 1), rgb_thw=(2, 8, 8), spec_tf=(12, 16),
                                         n_bottlenecks=None), 1, "xattn"),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_configuration_matches_official_semantics(name: str, tmp_path: Path) -> None:
    kwargs, fusion_layer, fusion = CONFIGS[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    params = random_mbt_params(rng, **kwargs)
    ckpt = tmp_path / "checkpoint.msgpack"
    ckpt.write_bytes(to_flax_msgpack(train_state(params)))

    T, H, W = kwargs.get("rgb_thw", (4, 16, 16))
    spec_tf = kwargs.get("spec_tf", (32, 16))
    model = convert_scenic_mbt(ckpt, fusion_layer, num_frames=T, image_size=(H, W), spec_size=spec_tf)
    assert model.cfg.fusion == fusion
    assert model.cfg.share_weights is kwargs.get("share_encoder", False)
    fh, fw, ft = kwargs.get("patches", (4, 4, 2))
    assert model.cfg.tubelet == (ft, fh, fw) and model.cfg.spec_patch == (fh, fw)

    rgb = rng.uniform(-1, 1, size=(2, T, H, W, 3)).astype(np.float32)
    spec = rng.standard_normal((2, *spec_tf)).astype(np.float32)
    ref = mbt_forward(params, rgb, spec, fusion_layer, share_encoder=kwargs.get("share_encoder", False),
                      use_bottleneck=kwargs.get("n_bottlenecks", 4) is not None)
    ours = run_avfusion(model, rgb, spec)
    diffs = max_diffs(ours, ref)
    assert max(diffs.values()) < TOL, diffs
    # The check can fail: the two modalities' logits differ, and are not trivially small.
    assert np.abs(ref["logits_rgb"] - ref["logits_spectrogram"]).max() > 1e-2


def test_test_without_bottlenecks(tmp_path: Path) -> None:
    """scenic's test_with_bottlenecks=False (eval with every layer unimodal): --test-without-bottlenecks."""
    rng = np.random.default_rng(7)
    params = random_mbt_params(rng)
    ckpt = tmp_path / "c.msgpack"
    ckpt.write_bytes(to_flax_msgpack(train_state(params)))
    rgb = rng.uniform(-1, 1, size=(2, 4, 16, 16, 3)).astype(np.float32)
    spec = rng.standard_normal((2, 32, 16)).astype(np.float32)
    ref = mbt_forward(params, rgb, spec, fusion_layer=1, share_encoder=False, use_bottleneck=True,
                      test_with_bottlenecks=False)
    out = tmp_path / "m"
    assert convert_main(["scenic-mbt", str(ckpt), "--fusion-layer", "1", "--test-without-bottlenecks", "--out",
                         str(out), "--num-frames", "4", "--image-size", "16", "16", "--spec-size", "32", "16"]) == 0
    model = avfusion.load_pretrained(out)
    assert model.cfg.fusion_layer == 1 and not model.cfg.test_with_bottlenecks
    diffs = max_diffs(run_avfusion(model, rgb, spec), ref)
    assert max(diffs.values()) < TOL, diffs
    with_bottlenecks = mbt_forward(params, rgb, spec, fusion_layer=1, share_encoder=False, use_bottleneck=True)
    assert np.abs(with_bottlenecks["logits"] - ref["logits"]).max() > 1e-3  # the option matters


@pytest.mark.parametrize("layout", ["optimizer", "params", "bare"])
def test_train_state_layouts(layout: str, tmp_path: Path) -> None:
    """Older scenic states keep PARAMS under optimizer/target, newer ones under params; a bare
    PARAMS tree is accepted too. All give the same model."""
    params = random_mbt_params(np.random.default_rng(3))
    tree = params if layout == "bare" else train_state(params, layout)
    ckpt = tmp_path / "c.msgpack"
    ckpt.write_bytes(to_flax_msgpack(tree))
    model = convert_scenic_mbt(ckpt, 1, num_frames=4, image_size=(16, 16), spec_size=(32, 16))
    np.testing.assert_array_equal(model.head.weight.detach().numpy(), params["output_projection"]["kernel"].T)


def test_fusion_layer_matters(tmp_path: Path) -> None:
    """Lf is behaviour, not shape: converting with the wrong one must change outputs (so the
    configuration tests above really test the fusion schedule)."""
    rng = np.random.default_rng(0)
    params = random_mbt_params(rng)
    ckpt = tmp_path / "c.msgpack"
    ckpt.write_bytes(to_flax_msgpack(train_state(params)))
    rgb = rng.uniform(-1, 1, size=(2, 4, 16, 16, 3)).astype(np.float32)
    spec = rng.standard_normal((2, 32, 16)).astype(np.float32)
    sizes = dict(num_frames=4, image_size=(16, 16), spec_size=(32, 16))
    a = run_avfusion(convert_scenic_mbt(ckpt, 1, **sizes), rgb, spec)["logits"]
    b = run_avfusion(convert_scenic_mbt(ckpt, 2, **sizes), rgb, spec)["logits"]
    assert np.abs(a - b).max() > 1e-3


# -- refusals --------------------------------------------------------------------------------------
def _write(tmp_path: Path, params: dict) -> Path:
    p = tmp_path / "c.msgpack"
    p.write_bytes(to_flax_msgpack(train_state(params)))
    return p


SIZES = dict(num_frames=4, image_size=(16, 16), spec_size=(32, 16))


def test_unmapped_parameter_is_refused(tmp_path: Path) -> None:
    params = random_mbt_params(np.random.default_rng(1))
    params["extra_head"] = {"kernel": np.zeros((24, 3), np.float32)}
    with pytest.raises(ValueError, match="does not map: \\['extra_head/kernel'\\]"):
        convert_scenic_mbt(_write(tmp_path, params), 1, **SIZES)


def test_pre_logits_is_refused(tmp_path: Path) -> None:
    params = random_mbt_params(np.random.default_rng(1))
    params["pre_logits"] = {"kernel": np.zeros((24, 24), np.float32), "bias": np.zeros(24, np.float32)}
    with pytest.raises(ValueError, match="pre_logits"):
        convert_scenic_mbt(_write(tmp_path, params), 1, **SIZES)


def test_gap_classifier_is_refused(tmp_path: Path) -> None:
    params = random_mbt_params(np.random.default_rng(1))
    del params["cls"], params["clsspectrogram"]
    with pytest.raises(ValueError, match="classifier='gap'"):
        convert_scenic_mbt(_write(tmp_path, params), 1, **SIZES)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    p = tmp_path / "junk.msgpack"
    p.write_bytes(to_flax_msgpack({"foo": {"bar": np.zeros(3, np.float32)}}))
    with pytest.raises(ValueError, match="not a scenic MBT checkpoint"):
        convert_scenic_mbt(p, 1, **SIZES)


def test_released_audioset_layout_needs_only_the_fusion_layer(tmp_path: Path) -> None:
    """A checkpoint with the released MBT-B/16x2 AudioSet token counts (3136 + 1 RGB, 400 + 1
    spectrogram, 4 + 1 bottlenecks, 527 classes; narrow and random here) converts with the
    documented command and gives avfusion's mbt_base geometry."""
    params = random_mbt_params(np.random.default_rng(5), hidden=8, heads=2, mlp=16, depth=12,
                               patches=(16, 16, 2), rgb_thw=(32, 224, 224), spec_tf=(800, 128), classes=527)
    ckpt = tmp_path / "mbtb32_as-500k_rgb-spec"  # the release's file name has no extension
    ckpt.write_bytes(to_flax_msgpack(train_state(params)))
    assert convert_main(["scenic-mbt", str(ckpt), "--fusion-layer", "8", "--out", str(tmp_path / "m")]) == 0
    got = avfusion.load_pretrained(tmp_path / "m").cfg
    ref = avfusion.get_model_config("mbt_base")
    for field in ("fusion", "share_weights", "depth", "fusion_layer", "num_bottlenecks", "bottleneck_extra_token",
                  "num_frames", "image_size", "tubelet", "spec_size", "spec_patch", "num_classes", "ln_eps", "gelu"):
        assert getattr(got, field) == getattr(ref, field), field


def test_cli_label_count_mismatch(scenic_fixture: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "names.txt").write_text("a\nb\n")
    args = ["scenic-mbt", str(scenic_fixture / "checkpoint.msgpack"), "--fusion-layer", "1", "--out",
            str(tmp_path / "m"), "--num-frames", "4", "--image-size", "16", "16", "--spec-size", "32", "16",
            "--labels", str(tmp_path / "names.txt")]
    assert convert_main(args) == 2
    assert "2 class names for 5 classes" in capsys.readouterr().err


# -- unimodal checkpoints: the released "Spec-only" / "RGB-only" models -----------------------------
SCENIC_TO_AVFUSION = {"spectrogram": "audio", "rgb": "video"}

UNIMODAL_CONFIGS = {
    # name: (random_mbt_params kwargs, --fusion-layer given (ignored))
    "spec_only_bottleneck_param": (dict(modality_fusion=("spectrogram",)), None),
    "spec_only_no_bottleneck": (dict(modality_fusion=("spectrogram",), n_bottlenecks=None), 2),
    "spec_only_shared_encoder": (dict(modality_fusion=("spectrogram",), share_encoder=True), 1),
    "spec_only_non_square": (dict(modality_fusion=("spectrogram",), patches=(4, 2, 2), spec_tf=(24, 10),
                                  n_bottlenecks=None), None),
    "rgb_only_bottleneck_param": (dict(modality_fusion=("rgb",)), None),
    "rgb_only_no_bottleneck": (dict(modality_fusion=("rgb",), n_bottlenecks=None), 3),
    "rgb_only_shared_encoder_flag": (dict(modality_fusion=("rgb",), share_encoder=True, n_bottlenecks=None), None),
    "rgb_only_tubelet_t1_non_square": (dict(modality_fusion=("rgb",), patches=(4, 2, 1), rgb_thw=(3, 8, 12)), 0),
}


def run_unimodal(model: torch.nn.Module, scenic_modality: str, rgb: np.ndarray | None,
                 spec: np.ndarray | None) -> dict[str, np.ndarray]:
    m = SCENIC_TO_AVFUSION[scenic_modality]
    x = (torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(0, 4, 1, 2, 3) if m == "video"
         else torch.from_numpy(np.ascontiguousarray(spec, dtype=np.float32)))
    with torch.no_grad():
        out = model({m: x})
    assert set(out.outputs) == {m}
    return {"logits": out.logits.numpy(), "logits_" + scenic_modality: out.outputs[m].numpy()}


@pytest.mark.parametrize("name", list(UNIMODAL_CONFIGS))
def test_unimodal_checkpoint_matches_official_semantics(name: str, tmp_path: Path) -> None:
    kwargs, fusion_layer = UNIMODAL_CONFIGS[name]
    (scenic_m,) = kwargs["modality_fusion"]
    m = SCENIC_TO_AVFUSION[scenic_m]
    rng = np.random.default_rng(sum(map(ord, name)))
    params = random_mbt_params(rng, **kwargs)
    # what flax leaves in such a checkpoint: one modality, CLS named 'cls', only the called blocks
    assert "cls" in params and "clsspectrogram" not in params
    assert ("embedding" in params) == (m == "video") and ("embedding_spectrogram" in params) == (m == "audio")
    ckpt = tmp_path / "checkpoint.msgpack"
    ckpt.write_bytes(to_flax_msgpack(train_state(params)))

    T, H, W = kwargs.get("rgb_thw", (4, 16, 16))
    spec_tf = kwargs.get("spec_tf", (32, 16))
    model = convert_scenic_mbt(ckpt, fusion_layer, num_frames=T, image_size=(H, W), spec_size=spec_tf)
    c = model.cfg
    assert c.family == "streams" and c.modalities == (m,) and c.fusion_layer == c.depth == 3
    assert not c.share_weights
    keys = model.state_dict().keys()
    assert not any("bottleneck" in k for k in keys)
    assert {k.split(".")[1] for k in keys if k.startswith("blocks.")} == {m}
    fh, fw, ft = kwargs.get("patches", (4, 4, 2))
    assert (c.tubelet == (ft, fh, fw)) if m == "video" else (c.spec_patch == (fh, fw))

    rgb = rng.uniform(-1, 1, size=(2, T, H, W, 3)).astype(np.float32) if m == "video" else None
    spec = rng.standard_normal((2, *spec_tf)).astype(np.float32) if m == "audio" else None
    ref = mbt_forward(params, rgb, spec, fusion_layer=0, share_encoder=kwargs.get("share_encoder", False),
                      use_bottleneck=kwargs.get("n_bottlenecks", 4) is not None,
                      modality_fusion=kwargs["modality_fusion"])
    ours = run_unimodal(model, scenic_m, rgb, spec)
    diffs = {k: float(np.abs(ours[k].astype(np.float64) - ref[k]).max()) for k in ours}
    assert max(diffs.values()) < TOL, diffs
    np.testing.assert_array_equal(ref["logits"], ref["logits_" + scenic_m])  # eval = that modality's head
    # The check can fail: logits are far from zero and differ between examples.
    assert np.abs(ref["logits"]).max() > 1e-1 and np.abs(ref["logits"][0] - ref["logits"][1]).max() > 1e-2


def test_unimodal_reference_never_fuses() -> None:
    """With one modality scenic ignores fusion_layer and the bottleneck (so the reference must too)."""
    rng = np.random.default_rng(11)
    params = random_mbt_params(rng, modality_fusion=("spectrogram",))
    spec = rng.standard_normal((2, 32, 16)).astype(np.float32)
    outs = [mbt_forward(params, None, spec, lf, share_encoder=False, use_bottleneck=True,
                        modality_fusion=("spectrogram",))["logits"] for lf in (0, 1, 3)]
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


def test_cli_spec_only_without_fusion_layer(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(21)
    params = random_mbt_params(rng, modality_fusion=("spectrogram",))
    ckpt = tmp_path / "mbt_spec_only"
    ckpt.write_bytes(to_flax_msgpack(train_state(params, "params")))
    out = tmp_path / "m"
    assert convert_main(["scenic-mbt", str(ckpt), "--out", str(out), "--spec-size", "32", "16"]) == 0
    printed = capsys.readouterr().out
    assert "audio only" in printed and "'bottleneck' parameter (5 tokens, use_bottleneck=True) dropped" in printed
    assert "video " not in printed  # no row for the absent modality
    record = json.loads((out / "convert.json").read_text())
    assert record["modalities"] == ["audio"] and record["fusion_layer"] == 3
    assert any("dropped" in n for n in record["notes"])
    model = avfusion.load_pretrained(out)
    assert model.cfg.modalities == ("audio",)
    spec = rng.standard_normal((2, 32, 16)).astype(np.float32)
    ref = mbt_forward(params, None, spec, 0, share_encoder=False, use_bottleneck=True,
                      modality_fusion=("spectrogram",))
    ours = run_unimodal(model, "spectrogram", None, spec)
    assert np.abs(ours["logits"] - ref["logits"]).max() < TOL

    # --fusion-layer is accepted (any value) and reported as ignored
    assert convert_main(["scenic-mbt", str(ckpt), "--fusion-layer", "1", "--out", str(tmp_path / "m2"),
                         "--spec-size", "32", "16"]) == 0
    assert "--fusion-layer 1 ignored" in capsys.readouterr().out


def test_cli_audio_visual_needs_fusion_layer(scenic_fixture: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    args = ["scenic-mbt", str(scenic_fixture / "checkpoint.msgpack"), "--out", str(tmp_path / "x"),
            "--num-frames", "4", "--image-size", "16", "16", "--spec-size", "32", "16"]
    assert convert_main(args) == 2
    assert "--fusion-layer is required for an RGB+spectrogram checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_unimodal_checks_only_its_own_sizes(tmp_path: Path) -> None:
    """An RGB-only checkpoint ignores --spec-size (no spectrogram stream); wrong video sizes still fail."""
    params = random_mbt_params(np.random.default_rng(4), modality_fusion=("rgb",))
    ckpt = _write(tmp_path, params)
    model = convert_scenic_mbt(ckpt, num_frames=4, image_size=(16, 16), spec_size=(30, 7))
    assert model.cfg.modalities == ("video",)
    with pytest.raises(ValueError, match="video tokens"):
        convert_scenic_mbt(ckpt, num_frames=8, image_size=(16, 16))


def _unimodal(scenic_m: str, **kw) -> dict:
    return random_mbt_params(np.random.default_rng(1), modality_fusion=(scenic_m,), **kw)


def test_unimodal_unsupported_variants_are_refused(tmp_path: Path) -> None:
    # RGB only, but spectrogram blocks: no scenic model writes this
    params = _unimodal("rgb")
    params["Transformer"]["encoderblock_0_spectrogram"] = params["Transformer"]["encoderblock_0"]
    with pytest.raises(ValueError, match="RGB only .* spectrogram encoder blocks \\[0\\]"):
        convert_scenic_mbt(_write(tmp_path, params), **SIZES)
    # spectrogram only with both block namings
    params = _unimodal("spectrogram")
    params["Transformer"]["encoderblock_0"] = params["Transformer"]["encoderblock_0_spectrogram"]
    with pytest.raises(ValueError, match="spectrogram only, but it has both RGB-named"):
        convert_scenic_mbt(_write(tmp_path, params), **SIZES)
    # one embedding but an audio-visual CLS name
    params = _unimodal("spectrogram")
    params["clsspectrogram"] = params.pop("cls")
    with pytest.raises(ValueError, match="no CLS token \\('cls'\\)"):
        convert_scenic_mbt(_write(tmp_path, params), **SIZES)
    params = _unimodal("rgb")
    params["clsspectrogram"] = params["cls"]
    with pytest.raises(ValueError, match="'clsspectrogram' token"):
        convert_scenic_mbt(_write(tmp_path, params), **SIZES)
    # pooling classifier (no CLS at all)
    params = _unimodal("rgb")
    del params["cls"]
    with pytest.raises(ValueError, match="classifier='gap'"):
        convert_scenic_mbt(_write(tmp_path, params), **SIZES)
    # a parameter nobody maps is still reported
    params = _unimodal("spectrogram")
    params["extra_head"] = {"kernel": np.zeros((24, 3), np.float32)}
    with pytest.raises(ValueError, match="does not map: \\['extra_head/kernel'\\]"):
        convert_scenic_mbt(_write(tmp_path, params), **SIZES)


def test_no_embedding_is_refused(tmp_path: Path) -> None:
    params = _unimodal("rgb")
    del params["embedding"]
    with pytest.raises(ValueError, match="neither 'embedding/kernel'"):
        convert_scenic_mbt(_write(tmp_path, params), **SIZES)


@pytest.mark.parametrize("scenic_m,variant", [("spectrogram", "mbt_base_audio"), ("rgb", "mbt_base_video")])
def test_released_unimodal_layout_converts_without_fusion_layer(scenic_m: str, variant: str, tmp_path: Path) -> None:
    """Checkpoints with the released Spec-only / RGB-only AudioSet geometry (narrow and random here)
    convert with the documented command (no --fusion-layer) to avfusion's unimodal geometry."""
    params = random_mbt_params(np.random.default_rng(6), hidden=8, heads=2, mlp=16, depth=12, patches=(16, 16, 2),
                               rgb_thw=(32, 224, 224), spec_tf=(800, 128), classes=527, modality_fusion=(scenic_m,))
    ckpt = tmp_path / f"mbtb32_as-500k_{scenic_m}"
    ckpt.write_bytes(to_flax_msgpack(train_state(params)))
    assert convert_main(["scenic-mbt", str(ckpt), "--out", str(tmp_path / "m")]) == 0
    got = avfusion.load_pretrained(tmp_path / "m").cfg
    ref = avfusion.get_model_config(variant)
    for field in ("family", "modalities", "share_weights", "depth", "fusion_layer", "num_frames", "image_size",
                  "tubelet", "spec_size", "spec_patch", "num_classes", "ln_eps", "gelu"):
        assert getattr(got, field) == getattr(ref, field), field
