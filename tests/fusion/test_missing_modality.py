"""Missing modality (DESIGN.md section 1) and Zorro's leak tests (section 3).

Zorro: the audio output must not depend on video at all, by omission (run without video) and by
perturbation (change only the video); the same for the video output; the fusion output must
depend on both. The stream family (MBT and friends) runs a present stream unimodally.
"""

import pytest
import torch

import avfusion
from avfusion.models import list_models

MASKED = [n for n in list_models("zorro_vit_tiny*")]
STREAMS = [n for n in list_models("mbt_tiny*") if not n.endswith(("_audio", "_video"))]


def _perturb(x: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return x + torch.randn(x.shape, generator=g)


@pytest.mark.parametrize("attn_impl", ["dense", "auto"])
def test_zorro_unimodal_outputs_are_exact_by_omission_and_perturbation(attn_impl, randomize):
    model = randomize(avfusion.create_model("zorro_vit_tiny", attn_impl=attn_impl)).eval()
    x = model.example_inputs(2)
    with torch.no_grad():
        both = model(x)
        audio_only = model({"audio": x["audio"]})
        video_only = model({"video": x["video"]})
        video_changed = model({"audio": x["audio"], "video": _perturb(x["video"], 1)})
        audio_changed = model({"audio": _perturb(x["audio"], 2), "video": x["video"]})

    # omission
    assert set(audio_only.outputs) == {"audio", "fusion", "global"}
    assert set(video_only.outputs) == {"video", "fusion", "global"}
    torch.testing.assert_close(audio_only.outputs["audio"], both.outputs["audio"], rtol=0, atol=1e-6)
    torch.testing.assert_close(video_only.outputs["video"], both.outputs["video"], rtol=0, atol=1e-6)
    torch.testing.assert_close(audio_only.logits, both.outputs["audio"], rtol=0, atol=1e-6)
    assert audio_only.notes and "video absent" in audio_only.notes[0]
    # perturbation
    torch.testing.assert_close(video_changed.outputs["audio"], both.outputs["audio"], rtol=0, atol=1e-6)
    torch.testing.assert_close(audio_changed.outputs["video"], both.outputs["video"], rtol=0, atol=1e-6)
    # the multimodal outputs do read both modalities
    for changed in (video_changed, audio_changed):
        for name in ("fusion", "global"):
            assert (changed.outputs[name] - both.outputs[name]).abs().max() > 1e-3, name
    # and each unimodal output does read its own modality
    assert (audio_changed.outputs["audio"] - both.outputs["audio"]).abs().max() > 1e-3
    assert (video_changed.outputs["video"] - both.outputs["video"]).abs().max() > 1e-3


def test_leak_test_catches_a_leaky_scheme(randomize):
    """The same perturbation test fails for bottleneck masking, where audio tokens read fusion tokens."""
    model = randomize(avfusion.create_model("zorro_vit_tiny_bottleneck_mask")).eval()
    x = model.example_inputs(2)
    with torch.no_grad():
        a = model(x).outputs["audio"]
        b = model({"audio": x["audio"], "video": _perturb(x["video"], 1)}).outputs["audio"]
        only = model({"audio": x["audio"]})
    assert (a - b).abs().max() > 1e-5  # 10x the tolerance the pure outputs meet
    assert "not modality-pure" in only.notes[0]


def test_independent_streams_are_pure_and_have_no_fusion_output(randomize):
    model = randomize(avfusion.create_model("zorro_vit_tiny_independent")).eval()
    x = model.example_inputs(2)
    with torch.no_grad():
        both = model(x)
        changed = model({"audio": x["audio"], "video": _perturb(x["video"], 1)})
    assert set(both.outputs) == {"audio", "video", "global"}
    torch.testing.assert_close(changed.outputs["audio"], both.outputs["audio"], rtol=0, atol=1e-6)
    torch.testing.assert_close(both.logits, both.outputs["global"])


@pytest.mark.parametrize("name", MASKED + STREAMS)
@pytest.mark.parametrize("present", ["audio", "video"])
def test_every_model_runs_with_one_modality(name, present, randomize):
    model = randomize(avfusion.create_model(name)).eval()
    x = model.example_inputs(2)
    with torch.no_grad():
        out = model({present: x[present]})
    assert out.logits.shape == (2, model.cfg.num_classes) and torch.isfinite(out.logits).all()
    absent = "video" if present == "audio" else "audio"
    assert absent not in out.outputs and present in out.outputs
    assert len(out.notes) == 1 and f"{absent} absent" in out.notes[0]
    torch.testing.assert_close(out.logits, out.outputs[present])


@pytest.mark.parametrize("name", STREAMS)
def test_stream_models_run_the_present_stream_unimodally(name, randomize):
    """Audio-only output == the audio output of the same weights with fusion switched off (Lf = L)."""
    model = randomize(avfusion.create_model(name)).eval()
    late = avfusion.create_model(name, fusion_layer=model.cfg.depth).eval()
    late.load_state_dict(model.state_dict(), strict=False)  # late fusion has no bottleneck tokens
    x = model.example_inputs(2)
    with torch.no_grad():
        for m in ("audio", "video"):
            torch.testing.assert_close(model({m: x[m]}).outputs[m], late(x).outputs[m], rtol=1e-5, atol=1e-5)
        both = model(x)
    # With both modalities the fused models really do mix (late fusion does not).
    if model.cfg.fusion_layer < model.cfg.depth:
        assert (both.outputs["audio"] - late(x).outputs["audio"]).abs().max() > 1e-3
    torch.testing.assert_close(both.logits, (both.outputs["audio"] + both.outputs["video"]) / 2)


def test_test_with_bottlenecks_false_runs_unimodally_in_eval(randomize):
    model = randomize(avfusion.create_model("mbt_tiny", test_with_bottlenecks=False))
    late = avfusion.create_model("mbt_tiny", fusion_layer=4).eval()
    late.load_state_dict(model.state_dict(), strict=False)
    x = model.example_inputs(2)
    with torch.no_grad():
        ev = model.eval()(x)
        tr = model.train()(x)
        ref = late(x)
    torch.testing.assert_close(ev.logits, ref.logits, rtol=1e-5, atol=1e-5)
    assert "test_with_bottlenecks=False" in ev.notes[0]
    assert (tr.logits - ref.logits).abs().max() > 1e-3  # training still fuses


@pytest.mark.parametrize("modality", ["audio", "video"])
def test_unimodal_models(modality, randomize):
    model = randomize(avfusion.create_model(f"mbt_tiny_{modality}")).eval()
    other = "video" if modality == "audio" else "audio"
    assert set(model.example_inputs(2)) == {modality}
    assert not any(other in name for name, _ in model.named_parameters())
    full = avfusion.create_model("mbt_tiny").example_inputs(2)
    with torch.no_grad():
        alone = model({modality: full[modality]})
        both = model(full)  # the other modality is ignored, and the note says so
    torch.testing.assert_close(both.logits, alone.logits)
    assert set(alone.outputs) == {modality} and not alone.notes
    assert both.notes == [f"{other} given but the model has only a {modality} stream: {other} ignored"]
    with pytest.raises(ValueError, match="none of this model's modalities"):
        model({other: full[other]})
