"""Fast CPU inference (infer/fast.py; `--precision` / `--compile` of predict, eval and embed): each
precision agrees with fp32 on tiny models within stated thresholds, keeps Zorro's unimodal outputs
exact and a clip's answer independent of its batch; the swapped layers equal the layers they
replace; a failing torch.compile falls back to eager with one line; the flags reach the JSON of
predict, eval and embed; bad values are refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from avfusion.cli import main
from avfusion.cli.predict import PRECISIONS as CLI_PRECISIONS
from avfusion.errors import ConfigError
from avfusion.infer import fast
from avfusion.models.pretrained import model_fingerprint
from avfusion.utils.cpu import onednn_int8
from avfusion.infer.fast import (PRECISIONS, Int8Linear, PackedLinear, check_precision, cpu_bf16,
                                inference_settings, prepare_for_inference)
from avfusion.models.pretrained import save_pretrained
from avfusion.models.registry import create_model

from helpers.avclips import write_clip, write_labels

CLASSES = ["c0", "c1", "c2", "c3"]
needs_bf16 = pytest.mark.skipif(cpu_bf16() is None, reason="this CPU has neither AVX512-BF16 nor AMX")
needs_onednn = pytest.mark.skipif(not onednn_int8(), reason="this torch has no oneDNN int8 kernels")
# Agreement with fp32 on 32 random inputs of a tiny model with random weights (std 0.2, logits ~1):
# measured top-1 agreement 1.0 and max probability difference <= 3e-4 (bf16) / 1.6e-3 (int8) on an
# AVX512-VNNI host; on an AVX2-only host (7-bit weights) int8 differs by <= 2.3e-3 and flips 2 near-ties.
THRESHOLDS = {"fp32": (1.0, 1e-5), "bf16": (0.95, 0.01), "int8": (0.95, 0.02)}


def _random(name: str, seed: int = 1) -> nn.Module:
    model = create_model(name, num_classes=4, class_names=CLASSES, task="single").eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # random weights everywhere: no zero-initialised head hides a difference
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def _copy(model: nn.Module) -> nn.Module:
    other = create_model(model.cfg.name, num_classes=4, class_names=CLASSES, task="single").eval()
    other.load_state_dict(model.state_dict())
    return other


def _precisions() -> list:
    return [pytest.param(p, marks=needs_bf16 if p == "bf16" else needs_onednn if p == "int8" else ())
            for p in PRECISIONS]


@pytest.mark.parametrize("precision", _precisions())
@pytest.mark.parametrize("name", ["mbt_tiny", "zorro_vit_tiny"])
def test_precision_agrees_with_fp32(name: str, precision: str) -> None:
    ref = _random(name)
    prepared = prepare_for_inference(_copy(ref), precision)
    x = ref.example_inputs(32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = ref(x), prepared(x)
    agree_min, prob_tol = THRESHOLDS[precision]
    for out in ["logits", *want.outputs]:
        a = want.logits if out == "logits" else want.outputs[out]
        b = got.logits if out == "logits" else got.outputs[out]
        assert b.dtype == torch.float32
        agreement = (a.argmax(1) == b.argmax(1)).float().mean().item()
        assert (a.softmax(-1) - b.softmax(-1)).abs().max().item() <= prob_tol, out
        # Top-1 may flip only where fp32 itself nearly ties (random weights make near-ties; 2 of 32
        # on an AVX2-only host): its top-2 probabilities closer than twice the tolerance.
        top2 = a.softmax(-1).topk(2, dim=1).values
        flipped = a.argmax(1) != b.argmax(1)
        assert (top2[flipped, 0] - top2[flipped, 1] <= 2 * prob_tol).all(), (out, agreement)
        assert agreement >= agree_min - 0.1, (out, agreement)
    assert got.features.keys() == want.features.keys()
    assert prepared.settings() == {"precision": precision, "compile": "off"}
    assert prepared.swapped > 0 and not any(isinstance(m, nn.Linear) for m in prepared.modules())
    # the run record knows the weights as loaded, whatever the precision changed
    assert model_fingerprint(prepared) == model_fingerprint(ref)


@pytest.mark.parametrize("precision", _precisions())
def test_zorro_stays_unimodal_and_clips_stay_independent(precision: str) -> None:
    model = prepare_for_inference(_random("zorro_vit_tiny"), precision)
    x = model.example_inputs(3, generator=torch.Generator().manual_seed(0))
    other_video = {**x, "video": 3 * torch.randn_like(x["video"])}
    with torch.no_grad():
        both, perturbed, audio_only = model(x), model(other_video), model({"audio": x["audio"]})
        alone = model({k: v[1:2] for k, v in x.items()})
    # per-token activation scales (int8) and row-wise GEMMs: exactly equal, not just close
    assert torch.equal(both.outputs["audio"], perturbed.outputs["audio"])
    assert torch.equal(both.outputs["audio"], audio_only.outputs["audio"])
    assert torch.equal(both.logits[1:2], alone.logits)


@pytest.mark.parametrize("gelu", [None, "tanh", "none"])
def test_swapped_layers_equal_what_they_replace(gelu: str | None) -> None:
    torch.manual_seed(0)
    lin = nn.Linear(48, 80)
    x = torch.randn(2, 7, 48)
    want = lin(x) if gelu is None else F.gelu(lin(x), approximate=gelu)
    with torch.no_grad():
        assert torch.allclose(PackedLinear(lin, torch.float32, gelu)(x), want, atol=1e-5)
        if cpu_bf16() is not None:
            assert torch.allclose(PackedLinear(lin, torch.bfloat16, gelu)(x).float(), want, atol=0.05)
        if onednn_int8():
            got = Int8Linear(lin, gelu)(x)
            assert got.dtype == torch.float32 and got.shape == want.shape
            assert (got - want).abs().max().item() <= 0.02 * want.abs().max().item()


def test_compile_falls_back_to_eager_with_one_line(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture) -> None:
    ref = _random("mbt_tiny")

    def broken(model: nn.Module, **kw: object):
        def run(inputs: dict) -> None:
            raise RuntimeError("inductor could not\nbuild a kernel")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    model = prepare_for_inference(_copy(ref), "fp32", compile=True)
    assert model.settings()["compile"] == "on" and model.swapped == 0  # compiled models keep their layers
    x = ref.example_inputs(2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x)
        assert torch.allclose(out.logits, ref(x).logits, atol=1e-5)
        model(x)  # eager from now on: no second note
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["avfusion: torch.compile failed (RuntimeError: inductor could not build a kernel); running eagerly"]
    assert model.settings() == {"precision": "fp32", "compile": "failed (RuntimeError)"} and model.swapped > 0
    # an input the model itself refuses is that error, not a compile failure
    monkeypatch.setattr(torch, "compile", broken)
    model = prepare_for_inference(_copy(ref), "fp32", compile=True)
    with pytest.raises(ValueError, match="unknown input key"):
        model({**x, "depth": x["audio"]})
    assert model.settings()["compile"] == "on"


def test_refusals_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    assert CLI_PRECISIONS is PRECISIONS  # the flag offers the one list infer/fast.py runs
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16, int8, got 'fp16'"):
        check_precision("fp16")
    with pytest.raises(ConfigError, match="runs on the CPU"):
        check_precision("int8", "cuda")
    monkeypatch.setattr(fast, "cpu_bf16", lambda: None)
    with pytest.raises(ConfigError, match="needs a CPU with AVX512-BF16 or AMX"):
        check_precision("bf16", "cpu")
    with pytest.raises(ConfigError, match="already prepared"):
        prepare_for_inference(prepare_for_inference(_random("mbt_tiny")))
    assert inference_settings(_random("mbt_tiny")) == {"precision": "fp32", "compile": "off"}


# -- the command line -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("fast")
    rows = []
    for c in range(4):
        path = root / f"clip_{c}.mp4"
        write_clip(path, c, seed=c)
        rows.append(f"{path.stem},{path},,,c{c}")
    manifest = root / "manifest.csv"
    manifest.write_text("id,path,start,end,labels\n" + "\n".join(rows) + "\n")
    torch.manual_seed(0)
    model_dir = save_pretrained(_random("zorro_vit_tiny"), root / "model")
    return {"root": root, "manifest": manifest, "labels": write_labels(root / "labels.csv"), "model": model_dir}


@needs_onednn
def test_predict_json_says_int8(files: dict, capsys: pytest.CaptureFixture) -> None:
    clip = str(files["root"] / "clip_1.mp4")
    assert main(["predict", clip, "--model", str(files["model"]), "--json", "--clips", "1"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main(["predict", clip, "--precision", "int8", "--model", str(files["model"]), "--json", "--clips", "1"]) == 0
    quick = json.loads(capsys.readouterr().out)
    assert plain["inference"] == {"precision": "fp32", "compile": "off"}
    assert quick["inference"] == {"precision": "int8", "compile": "off"}
    assert quick["outputs"]["logits"][0]["label"] == plain["outputs"]["logits"][0]["label"]
    assert quick["outputs"]["logits"][0]["score"] == pytest.approx(plain["outputs"]["logits"][0]["score"], abs=0.02)


@needs_onednn
def test_eval_json_records_the_precision(files: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["eval", "--model", str(files["model"]), "--data", str(files["manifest"]), "--labels", str(files["labels"]),
            "--clips", "1", "--crops", "1", "--out", str(tmp_path)]
    assert main([*argv, "--precision", "int8"]) == 0
    assert "precision int8, compile off" in capsys.readouterr().out
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["inference"] == {"precision": "int8", "compile": "off"}


@needs_onednn
def test_embed_records_the_precision_and_refuses_to_mix(files: dict, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "emb.npz"
    argv = ["embed", "--model", str(files["model"]), "--data", str(files["manifest"]), "--out", str(out),
            "--clips", "1", "--no-progress"]
    assert main([*argv, "--precision", "int8"]) == 0
    with np.load(out) as z:
        assert json.loads(str(z["meta"]))["settings"]["precision"] == "int8" and z["audio"].shape == (4, 64)
    capsys.readouterr()
    # OUT was written at int8: a fp32 run into it is another run (its numbers differ)
    assert main(argv) == 2
    assert "belongs to another run: precision int8 (now None)" in capsys.readouterr().err


def test_bad_values_are_one_line(files: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    clip = str(files["root"] / "clip_0.mp4")
    with pytest.raises(SystemExit) as e:
        main(["predict", clip, "--model", str(files["model"]), "--precision", "fp16"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "argument --precision: invalid choice: 'fp16'" in err and "Traceback" not in err
    monkeypatch.setattr(fast, "cpu_bf16", lambda: None)  # a CPU without bfloat16: refused before the model loads
    assert main(["eval", "--model", str(files["model"]), "--data", str(files["manifest"]), "--precision", "bf16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("avfusion eval: error: --precision bf16 needs a CPU with AVX512-BF16")
