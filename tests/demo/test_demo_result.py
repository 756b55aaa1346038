"""The demo's expected result, checked on a reduced run (issue 6, docs/demo.md "Results").

The default `avfusion demo` minus late fusion and the real-video prediction: the same data, seed,
steps and settings for MBT, Zorro and the two unimodal baselines, trained two at a time with one
thread each (about 12 minutes on 2 cores). What must hold:

- fusion beats the best unimodal model by a clear margin (MBT and Zorro's fusion output);
- Zorro's audio and video outputs stay close to the dedicated unimodal baselines;
- each unimodal model fails where its modality is destroyed (near chance, 0.1), which is what
  makes fusion matter on AV-digits.

The margins leave room for run-to-run noise: 200 test clips (one clip = 0.005), tiny models
trained from scratch, and floating-point differences between CPUs.
"""

import json

from avfusion.cli import main

# In this order the two jobs finish together: MBT then video only, Zorro then audio only.
MODELS = ["mbt_tiny", "zorro_vit_tiny", "mbt_tiny_video", "mbt_tiny_audio"]


def _top1(summary, model, output="logits", condition=None):
    conds = summary["results"][model]["report"]["conditions"]
    return conds[condition or next(iter(conds))]["outputs"][output]["top1"]


def test_fusion_beats_unimodal_and_zorro_unimodal_outputs_match_baselines(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--models", *MODELS, "--no-bigbuckbunny"]) == 0
    s = json.loads((out / "results.json").read_text())

    audio_only, video_only = _top1(s, "mbt_tiny_audio"), _top1(s, "mbt_tiny_video")
    best_unimodal = max(audio_only, video_only)
    mbt, zorro = _top1(s, "mbt_tiny"), _top1(s, "zorro_vit_tiny", "fusion")
    zorro_audio, zorro_video = _top1(s, "zorro_vit_tiny", "audio"), _top1(s, "zorro_vit_tiny", "video")
    got = dict(mbt=mbt, zorro=zorro, audio_only=audio_only, video_only=video_only,
               zorro_audio=zorro_audio, zorro_video=zorro_video)

    assert mbt >= best_unimodal + 0.08, got
    assert zorro >= best_unimodal + 0.06, got
    assert abs(zorro_audio - audio_only) <= 0.1, got
    assert abs(zorro_video - video_only) <= 0.1, got
    # Zorro's unimodal outputs do not depend on the other modality (also with it withheld).
    assert _top1(s, "zorro_vit_tiny", "audio", "audio only") == zorro_audio
    assert _top1(s, "zorro_vit_tiny", "video", "video only") == zorro_video

    by_cond = {m: s["results"][m]["by_condition"] for m in MODELS}
    assert by_cond["mbt_tiny_audio"]["noisy_audio"] <= 0.2, by_cond
    assert by_cond["mbt_tiny_video"]["occluded_video"] <= 0.2, by_cond
    for fused in ("mbt_tiny", "zorro_vit_tiny"):  # fusion recovers the clips either modality fails on
        assert by_cond[fused]["noisy_audio"] >= by_cond["mbt_tiny_audio"]["noisy_audio"] + 0.15, by_cond
        assert by_cond[fused]["occluded_video"] >= by_cond["mbt_tiny_video"]["occluded_video"] + 0.15, by_cond
