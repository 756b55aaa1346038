"""The demo's expected result, checked on the settings `avfusion demo` runs (docs/demo.md "Results").

The default `avfusion demo` minus the real-video prediction: the same data, seed, steps and
settings for all five models, trained two at a time with one thread each (about 6 minutes on
the 2-core AVX2-only EPYC, 2026-12-07; `make test-all`). What must hold, as issue 23 states the story:

- fusion beats the best unimodal model by at least 10 points: MBT and late fusion do with room;
  Zorro's fusion output did here (11.5 points, 2026-12-07) but not firmly across seeds (4.7-12.1
  points on 1000 test clips, docs/demo.md "Zorro at 900 steps, over seeds"): a non-strict
  expected failure;
- Zorro's audio and video outputs do not depend on the other modality (also with it withheld),
  and are within 5 points of the dedicated unimodal models: the audio output is (3 below), the
  video output is not (6 below, 2026-12-07); 0-11 points below across seeds: a non-strict
  expected failure;
- each unimodal model is near chance (0.1) where its modality is destroyed, which is what makes
  fusion matter on AV-digits, and the fusion models recover those clips.

200 test clips (one clip = 0.005), tiny models trained from scratch; training is single-threaded
and seeded, so on one machine the numbers repeat exactly, and other CPUs' floating point moves
them by a few clips.
"""

import json

import pytest

from avfusion.cli import main

# The demo's five models, started in its order, two at a time (the longest first).
MODELS = ["mbt_tiny", "zorro_vit_tiny", "mbt_tiny_late", "mbt_tiny_audio", "mbt_tiny_video"]


def _top1(summary, model, output="logits", condition=None):
    conds = summary["results"][model]["report"]["conditions"]
    return conds[condition or next(iter(conds))]["outputs"][output]["top1"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out), "--no-bigbuckbunny"]) == 0
    s = json.loads((out / "results.json").read_text())
    assert s["settings"]["steps"] == 900  # the default run's settings
    return s


@pytest.mark.slow
def test_fusion_beats_unimodal_and_unimodal_models_fail_where_their_modality_is_destroyed(demo):
    s = demo
    audio_only, video_only = _top1(s, "mbt_tiny_audio"), _top1(s, "mbt_tiny_video")
    best_unimodal = max(audio_only, video_only)
    mbt, late = _top1(s, "mbt_tiny"), _top1(s, "mbt_tiny_late")
    got = dict(mbt=mbt, late=late, audio_only=audio_only, video_only=video_only)

    assert mbt >= best_unimodal + 0.10, got
    assert late >= best_unimodal + 0.10, got
    # Zorro's unimodal outputs do not depend on the other modality (also with it withheld).
    zorro_audio, zorro_video = _top1(s, "zorro_vit_tiny", "audio"), _top1(s, "zorro_vit_tiny", "video")
    assert _top1(s, "zorro_vit_tiny", "audio", "audio only") == zorro_audio
    assert _top1(s, "zorro_vit_tiny", "video", "video only") == zorro_video

    by_cond = {m: s["results"][m]["by_condition"] for m in MODELS}
    assert by_cond["mbt_tiny_audio"]["noisy_audio"] <= 0.2, by_cond
    assert by_cond["mbt_tiny_video"]["occluded_video"] <= 0.2, by_cond
    for fused in ("mbt_tiny", "mbt_tiny_late", "zorro_vit_tiny"):  # fusion recovers the clips either modality fails on
        assert by_cond[fused]["noisy_audio"] >= by_cond["mbt_tiny_audio"]["noisy_audio"] + 0.15, by_cond
        assert by_cond[fused]["occluded_video"] >= by_cond["mbt_tiny_video"]["occluded_video"] + 0.15, by_cond


@pytest.mark.slow
@pytest.mark.xfail(strict=False, reason="issue 23: at the 8-minute budget (900 steps) Zorro's fusion output leads "
                   "the best unimodal model by 4.7-12.1 points across seeds (11.5 in the default run; "
                   "2026-12-07, AVX2-only EPYC): not firmly 10")
def test_zorro_fusion_beats_unimodal_by_10_points(demo):
    s = demo
    best_unimodal = max(_top1(s, "mbt_tiny_audio"), _top1(s, "mbt_tiny_video"))
    zorro = _top1(s, "zorro_vit_tiny", "fusion")
    assert zorro >= best_unimodal + 0.10, dict(zorro=zorro, best_unimodal=best_unimodal)


@pytest.mark.slow
@pytest.mark.xfail(strict=False, reason="issue 23: at the 8-minute budget (900 steps) Zorro's audio / video outputs "
                   "are 3 / 6 points below the dedicated models in the default run, 0-11 across seeds "
                   "(2026-12-07, AVX2-only EPYC)")
def test_zorro_unimodal_outputs_within_5_points_of_the_dedicated_models(demo):
    s = demo
    audio_only, video_only = _top1(s, "mbt_tiny_audio"), _top1(s, "mbt_tiny_video")
    zorro_audio, zorro_video = _top1(s, "zorro_vit_tiny", "audio"), _top1(s, "zorro_vit_tiny", "video")
    got = dict(audio_only=audio_only, video_only=video_only, zorro_audio=zorro_audio, zorro_video=zorro_video)
    assert abs(zorro_audio - audio_only) <= 0.05, got
    assert abs(zorro_video - video_only) <= 0.05, got
