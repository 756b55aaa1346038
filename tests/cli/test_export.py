"""`avfusion export`: torch.export (.pt2) and ONNX files with a dynamic batch, checked against the
eager model (--check), and loaded and run in a clean interpreter that cannot import avfusion
(the ONNX file even without torch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from avfusion.cli import main
from avfusion.infer.export import Exportable, check_export, example_inputs, export_model, read_metadata, run_file
from avfusion.models.pretrained import load_pretrained, save_pretrained
from avfusion.models.registry import create_model

from conftest import randomize_  # tests/conftest.py (tests/ is on sys.path)

CLASSES = ["c0", "c1", "c2"]


def _model_dir(root: Path, name: str) -> Path:
    # random weights everywhere (a zero-initialised head would make every logit 0 and any check pass)
    model = randomize_(create_model(name, num_classes=3, class_names=CLASSES, task="single"), std=0.1)
    return save_pretrained(model, root / name)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export")
    return {n: _model_dir(root, n) for n in ("zorro_vit_tiny", "mbt_tiny", "mbt_tiny_audio")}


def _clean_run(script: str, cwd: Path) -> dict:
    """Run ``script`` in a fresh interpreter: isolated (-I: no PYTHONPATH, no user site, not the
    script's folder), from a folder far from the source, with avfusion made unimportable."""
    guard = "import sys\nsys.modules['avfusion'] = None  # any import of avfusion now fails\n"
    path = cwd / "run_exported.py"
    path.write_text(guard + textwrap.dedent(script))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OMP_NUM_THREADS": "1", "HOME": str(cwd)}
    proc = subprocess.run([sys.executable, "-I", str(path)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _save_case(model: torch.nn.Module, inputs: tuple[str, ...], where: Path, batch: int = 3) -> None:
    """Inputs and the eager model's outputs, as .npy files the clean interpreter reads."""
    x = example_inputs(model, inputs, batch, seed=7)
    with torch.no_grad():
        want = Exportable(model.eval(), inputs)(**x)
    for k, v in {**x, **{f"want_{n}": t for n, t in want.items()}}.items():
        np.save(where / f"{k}.npy", v.numpy())


@pytest.mark.parametrize("name", ["zorro_vit_tiny", "mbt_tiny"])
def test_pt2_check_and_a_clean_interpreter(dirs, name, tmp_path, capsys):
    out = tmp_path / f"{name}.pt2"
    assert main(["export", "--model", str(dirs[name]), "--out", str(out), "--check", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["format"] == "pt2" and res["inputs"] == ["audio", "video"]
    assert res["outputs"][0] == "logits" and "audio_logits" in res["outputs"]
    assert res["check"]["max_abs_error"] <= 1e-4 and res["check"]["batches"] == [1, 3]
    meta = read_metadata(out, "pt2")
    assert meta["config"]["class_names"] == CLASSES and meta["inputs"]["audio"] == ["batch", 96, 32]

    model = load_pretrained(dirs[name])
    work = tmp_path / "clean"
    work.mkdir()
    _save_case(model, ("audio", "video"), work, batch=3)
    res = _clean_run(f"""
        import json, numpy as np, torch
        extra = {{"avfusion.json": ""}}
        fn = torch.export.load({str(out)!r}, extra_files=extra).module()
        meta = json.loads(extra["avfusion.json"])
        x = {{m: torch.from_numpy(np.load(m + ".npy")) for m in ("audio", "video")}}
        with torch.no_grad():
            got = fn(**x)
        err = max(float((got[n] - torch.from_numpy(np.load("want_" + n + ".npy"))).abs().max()) for n in meta["outputs"])
        print(json.dumps({{"err": err, "outputs": sorted(got), "batch": got["logits"].shape[0],
                          "avfusion_loaded": any(k.startswith("avfusion.") for k in sys.modules)}}))
    """, work)
    assert res["err"] <= 1e-4 and res["batch"] == 3 and not res["avfusion_loaded"]
    assert res["outputs"] == sorted(meta["outputs"])


def test_zorro_audio_only_export_is_its_exact_unimodal_path(dirs, tmp_path):
    model = load_pretrained(dirs["zorro_vit_tiny"])
    result = export_model(model, tmp_path / "audio.pt2", "pt2", ("audio",))
    assert result.inputs == ("audio",) and result.outputs == ["logits", "audio_logits", "fusion_logits",
                                                              "global_logits"]
    x = example_inputs(model, ("audio", "video"), 2, seed=3)
    got = run_file(result.path, "pt2", {"audio": x["audio"]})
    with torch.no_grad():
        both = model(x)  # Zorro routing: the audio output does not depend on the video
    assert torch.allclose(got["audio_logits"], both.outputs["audio"], atol=1e-5)
    assert got["logits"].abs().max() > 0.01  # real numbers, not a zero head


@pytest.mark.slow  # slow tier: the ONNX exporter and onnxruntime (pt2 export stays in the default tier)
def test_onnx_check_and_onnxruntime_alone(dirs, tmp_path, capsys):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    out = tmp_path / "zorro.onnx"
    assert main(["export", "--model", str(dirs["zorro_vit_tiny"]), "--out", str(out), "--check"]) == 0
    text = capsys.readouterr().out
    assert "(onnx;" in text and "max abs error" in text and ": ok" in text
    model = load_pretrained(dirs["zorro_vit_tiny"])
    work = tmp_path / "clean"
    work.mkdir()
    _save_case(model, ("audio", "video"), work, batch=5)
    res = _clean_run(f"""
        sys.modules['torch'] = None  # onnxruntime alone runs the file
        import json, numpy as np, onnxruntime as ort
        s = ort.InferenceSession({str(out)!r}, providers=["CPUExecutionProvider"])
        meta = json.loads(s.get_modelmeta().custom_metadata_map["avfusion"])
        got = dict(zip([o.name for o in s.get_outputs()],
                       s.run(None, {{i.name: np.load(i.name + ".npy") for i in s.get_inputs()}})))
        err = max(float(np.abs(got[n] - np.load("want_" + n + ".npy")).max()) for n in meta["outputs"])
        print(json.dumps({{"err": err, "batch": int(got["logits"].shape[0]), "classes": meta["config"]["class_names"],
                          "inputs": sorted(i.name for i in s.get_inputs())}}))
    """, work)
    assert res["err"] <= 1e-4 and res["batch"] == 5 and res["classes"] == CLASSES
    assert res["inputs"] == ["audio", "video"]


def test_unimodal_model_exports_its_one_input(dirs, tmp_path, capsys):
    out = tmp_path / "a.pt2"
    assert main(["export", "--model", str(dirs["mbt_tiny_audio"]), "--out", str(out), "--check", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["inputs"] == ["audio"] and res["check"]["max_abs_error"] <= 1e-4


def test_bad_requests_are_one_line(dirs, tmp_path, capsys):
    rc = main(["export", "--model", str(dirs["mbt_tiny_audio"]), "--out", str(tmp_path / "v.pt2"),
               "--inputs", "video"])
    err = capsys.readouterr().err
    assert rc == 2 and "takes only audio" in err and len(err.strip().splitlines()) == 1
    assert main(["export", "--model", str(tmp_path / "none"), "--out", str(tmp_path / "x.pt2")]) == 2
    assert "no model directory" in capsys.readouterr().err
    assert main(["export", "--model", str(dirs["mbt_tiny"]), "--out", str(tmp_path)]) == 2  # a folder
    assert "is a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["export", "--model", str(dirs["mbt_tiny"]), "--out", str(tmp_path / "x.pt2"), "--attn", "flex"])
    assert info.value.code == 2 and "invalid choice: 'flex'" in capsys.readouterr().err


def test_check_fails_when_the_file_differs(dirs, tmp_path, monkeypatch, capsys):
    import avfusion.infer.export as E

    real = E.run_file

    def off_by_a_little(path, fmt, inputs):
        return {n: v + 2e-4 for n, v in real(path, fmt, inputs).items()}

    monkeypatch.setattr(E, "run_file", off_by_a_little)
    rc = main(["export", "--model", str(dirs["mbt_tiny_audio"]), "--out", str(tmp_path / "a.pt2"), "--check"])
    captured = capsys.readouterr()
    assert rc == 1 and "FAILED" in captured.out and "differs from the eager model by 0.0002" in captured.err


@pytest.mark.slow  # slow tier: Swin / HiP export (ViT and MBT export stay in the default tier)
@pytest.mark.parametrize("name", ["zorro_swin_tiny", "zorro_hip_tiny"])
def test_hierarchical_zorro_exports(name, tmp_path):
    model = load_pretrained(_model_dir(tmp_path, name))
    result = export_model(model, tmp_path / f"{name}.pt2")
    check = check_export(model, result)
    assert check["max_abs_error"] <= 1e-4 and set(check["per_output"]) == set(result.outputs)


def test_the_format_follows_the_suffix_in_any_case_and_a_contradiction_is_refused(dirs, tmp_path, capsys):
    pytest.importorskip("onnxscript")
    out = tmp_path / "model.ONNX"  # before: silently a pt2 file under an ONNX name
    assert main(["export", "--model", str(dirs["mbt_tiny_audio"]), "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "onnx"
    assert read_metadata(out, "onnx")["inputs"].keys() == {"audio"}  # onnx.load reads it
    assert not out.read_bytes().startswith(b"PK")  # a .pt2 is a zip archive; this is an ONNX protobuf
    for fmt, name, other in (("pt2", "x.onnx", "onnx"), ("onnx", "x.PT2", "pt2")):
        rc = main(["export", "--model", str(dirs["mbt_tiny_audio"]), "--out", str(tmp_path / name), "--format", fmt])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and f"names a {other} file but --format is {fmt}" in err[0], err
        assert not (tmp_path / name).exists()
