"""The demo end to end on a reduced run: every step runs and every artefact of the report exists.

(The full run's numbers are recorded in docs/demo.md; this checks the machinery, not accuracy.)
"""

import json

from avfusion.cli import main


def test_reduced_demo_run(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--clips", "40", "10", "20", "--steps", "6", "--jobs", "2"])
    assert rc == 0
    printed = capsys.readouterr().out
    for step in range(1, 8):
        assert f"[{step}/7]" in printed
    assert "Report:" in printed and "Zorro's four outputs" in printed

    summary = json.loads((out / "results.json").read_text())
    assert set(summary["results"]) == {"mbt_tiny", "zorro_vit_tiny", "mbt_tiny_late", "mbt_tiny_audio", "mbt_tiny_video"}
    zorro = summary["results"]["zorro_vit_tiny"]["report"]["conditions"]
    assert set(zorro) == {"audio+video", "audio only", "video only"}
    # Zorro's audio output is the same whether or not the video is given.
    assert zorro["audio only"]["outputs"]["audio"] == zorro["audio+video"]["outputs"]["audio"]
    assert zorro["video only"]["outputs"]["video"] == zorro["audio+video"]["outputs"]["video"]
    assert set(summary["results"]["mbt_tiny_audio"]["report"]["conditions"]) == {"audio"}
    # Zorro trains with 8 fusion tokens, as zorro_vit_base (demo.run.MODEL_OVERRIDES), recorded in the summary.
    zorro_cfg = json.loads((out / "models" / "zorro_vit_tiny" / "config.json").read_text())
    assert zorro_cfg["num_fusion_tokens"] == 8 and summary["model_overrides"]["zorro_vit_tiny"]["num_fusion_tokens"] == 8
    for r in summary["results"].values():
        assert set(r["by_condition"]) == {"clean", "noisy_audio", "occluded_video"}
        assert len(r["history"]) > 0 and r["gflops"] > 0

    preds = summary["predictions"]
    assert any("bigbuckbunny" in p["path"] for p in preds)  # a real video through predict
    assert all(p["outputs"]["logits"] for p in preds)

    page = (out / "report.html").read_text()
    for pic in ("curves.png", "outputs.png", "missing_modality.png", "conditions.png", "flops.png",
                "attention_zorro_vit_tiny.png", "attention_mbt_tiny.png"):
        assert (out / pic).stat().st_size > 1000 and pic in page
    assert (out / "best" / "model.safetensors").is_file()


def test_demo_flags_reach_the_settings(monkeypatch, capsys):
    import avfusion.demo.run as run

    seen = {}

    def fake_run(s):
        seen["s"] = s
        return {"seconds": 0.0, "report": "r.html"}

    monkeypatch.setattr(run, "run_demo", fake_run)
    monkeypatch.setattr(run, "print_results", lambda summary: None)
    assert main(["demo", "--seed", "3", "--steps", "7", "--clips", "5", "6", "7", "--models", "mbt_tiny",
                 "--jobs", "1", "--no-bigbuckbunny"]) == 0
    s = seen["s"]
    assert (s.seed, s.steps, s.n_train, s.n_val, s.n_test, s.models, s.jobs, s.predict_bigbuckbunny) == (
        3, 7, 5, 6, 7, ("mbt_tiny",), 1, False)
    assert main(["demo"]) == 0 and seen["s"].seed == 0 and seen["s"].steps == 900  # the documented defaults


def test_training_curves_compare_losses_per_output():
    from avfusion.demo.report import _loss_per_output

    # Zorro logs the sum of its four outputs' losses; MBT the mean of its two; a baseline its one.
    assert _loss_per_output({"loss": 8.0, "loss_audio": 1.0, "loss_video": 2.0, "loss_fusion": 2.0, "loss_global": 3.0}) == 2.0
    assert _loss_per_output({"loss": 1.5, "loss_audio": 1.0, "loss_video": 2.0}) == 1.5
    assert _loss_per_output({"loss": 0.7, "step": 10}) == 0.7


def test_demo_refuses_a_negative_seed_naming_the_flag(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["demo", "--seed", "-1"])
    assert "--seed: must be a non-negative integer, got -1" in capsys.readouterr().err
