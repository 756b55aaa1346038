"""Official scenic MBT checkpoints -> avfusion: parity with the official outputs.

The fixture (bottleneck fusion, Lf = 1) was produced by the official JAX code; every other
configuration the official model supports is checked against an independent NumPy
re-implementation of the official forward (scenic_mbt_reference.py), which is itself checked
against the fixture first.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import avfusion
from avfusion.cli.convert import main as convert_main
from avfusion.convert import convert_scenic_mbt, infer_layout, load_flax_msgpack
from avfusion.convert.safe_load import flatten_tree
from avfusion.convert.scenic_mbt import scenic_mbt_params
from scenic_mbt_reference import mbt_forward, random_mbt_params, to_flax_msgpack, train_state

TOL = 1e-4  # absolute, float32 (fixture README)


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


@pytest.mark.parametrize("drop", ["rgb", "spectrogram"])
def test_unimodal_checkpoint_is_refused(drop: str, tmp_path: Path) -> None:
    params = random_mbt_params(np.random.default_rng(1))
    suffix = "" if drop == "rgb" else "_spectrogram"
    del params[f"embedding{suffix}"], params["Transformer"][f"posembed_input{suffix}"]
    kept = "spectrogram" if drop == "rgb" else "RGB"
    with pytest.raises(ValueError, match=f"unimodal MBT checkpoint \\({kept} only"):
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
