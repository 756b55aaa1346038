"""Timelines (infer/over_time.py, `avfusion predict --timeline`): window placement, labels that switch
when the content does (a fake model that reads the colour and the tone), a file whose streams start
at 5 s, unequal stream lengths, a truncated file, chunked decoding (the same answer, bounded reads),
strict JSON, the picture, and the command line (files and --data)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from avfusion.cli import main
from avfusion.errors import ConfigError
from avfusion.data.clips import ClipConfig, ClipProcessor, FileSegment
from avfusion.infer.over_time import curves, plot_classes, plot_timeline, timeline_file, window_spans
from avfusion.core.base import ModelOutput
from avfusion.models.pretrained import save_pretrained
from avfusion.models.registry import create_model, get_model_config

from helpers.avclips import COLOURS
from helpers.timeline_media import write_parts

CLASSES = ["c0", "c1", "c2", "c3"]
CFG = get_model_config("zorro_vit_tiny", num_classes=4, class_names=CLASSES, task="single")


def _strict(text: str) -> dict:
    def refuse(name: str) -> None:
        raise AssertionError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


class ContentModel(nn.Module):
    """Logits that follow the content: video by the mean colour's distance to each class colour,
    audio by the energy in each class tone's mel bin (found on one-class clips), fusion the mean of
    the two. Zorro's output names; a missing modality gives that modality no output."""

    def __init__(self, tone_bins: list[int]) -> None:
        super().__init__()
        self.cfg = CFG
        self.tone_bins = tone_bins
        self.dummy = nn.Parameter(torch.zeros(1))  # for the device and the fingerprint

    def forward(self, inputs: dict[str, torch.Tensor]) -> ModelOutput:
        out: dict[str, torch.Tensor] = {}
        if "video" in inputs:
            rgb = (inputs["video"].mean((2, 3, 4)) + 1) * 127.5  # (B, 3): scenic frames are in [-1, 1]
            out["video"] = -torch.cdist(rgb, torch.tensor(COLOURS, dtype=torch.float32)) / 10  # (B, 4)
        if "audio" in inputs:
            spec = inputs["audio"].mean(1)  # (B, F)
            out["audio"] = spec[:, self.tone_bins] * 4  # (B, 4)
        out["fusion"] = torch.stack(list(out.values())).mean(0)
        out["global"] = out["fusion"]
        notes = [] if len(inputs) == 2 else [f"only {next(iter(inputs))}"]
        return ModelOutput(logits=out["fusion"], outputs=out, notes=notes)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("timeline")
    files = {
        "change": write_parts(root / "change.mp4", [(1, 3.0), (3, 3.0)], seed=1),
        "late": write_parts(root / "late.mp4", [(1, 3.0), (3, 3.0)], start=5.0, seed=1),
        # the picture changes at 2 s, the sound at 4 s: the outputs disagree in between
        "apart": write_parts(root / "apart.mp4", [(0, 2.0), (2, 4.0)], audio_parts=[(0, 4.0), (2, 2.0)], seed=2),
        # audio runs 2 s past the end of the video
        "unequal": write_parts(root / "unequal.mp4", [(1, 4.0)], audio_parts=[(1, 6.0)], seed=3),
        "silent": write_parts(root / "silent.mp4", [(2, 2.0)], audio=False, seed=4),
    }
    for c in range(4):
        files[f"pure{c}"] = write_parts(root / f"pure{c}.mp4", [(c, 1.2)], seed=10 + c)
    full = write_parts(root / "full.mp4", [(1, 3.0), (3, 3.0)], seed=5, faststart=True)
    data = full.read_bytes()
    (root / "cut.mp4").write_bytes(data[: int(len(data) * 0.5)])  # cut off half-way, its index first
    files["cut"] = root / "cut.mp4"
    return files


@pytest.fixture(scope="module")
def fake(media) -> ContentModel:
    """The mel bin where each class's tone is loudest, measured on one-class clips."""
    clip_cfg = ClipConfig.from_model(CFG, eval_clips=1, eval_crops=1)
    proc = ClipProcessor(clip_cfg, train=False)
    bins = []
    for c in range(4):
        spec = proc(FileSegment(str(media[f"pure{c}"]), None, None, clip_cfg))["audio"][0].mean(0)  # (F,)
        bins.append(int(spec.argmax()))
    assert len(set(bins)) == 4, bins
    return ContentModel(bins).eval()


def test_window_spans_cover_the_span_and_end_at_its_end():
    assert window_spans(0.0, 10.0, 4.0, 2.0) == [(0.0, 4.0), (2.0, 6.0), (4.0, 8.0), (6.0, 10.0)]
    spans = window_spans(0.0, 10.5, 4.0, 2.0)  # the last window is moved back to end at 10.5
    assert spans == [(0.0, 4.0), (2.0, 6.0), (4.0, 8.0), (6.0, 10.0), (6.5, 10.5)]
    assert window_spans(1.0, 3.0, 4.0, 2.0) == [(1.0, 3.0)]  # shorter than a window: one window
    assert window_spans(5.0, 15.0, 4.0, 6.0) == [(5.0, 9.0), (11.0, 15.0)]  # hop > window leaves gaps
    for start, end, w, h in [(0.0, 7.3, 0.97, 0.485), (2.0, 61.0, 8.0, 4.0), (0.0, 3600.0, 8.015, 4.0075)]:
        spans = window_spans(start, end, w, h)
        assert spans[0][0] == start and math.isclose(spans[-1][1], end)
        assert all(math.isclose(e - s, w) for s, e in spans)
        steps = np.diff([s for s, _ in spans])
        assert (steps > 0).all() and (steps <= h + 1e-9).all()


def test_labels_switch_when_the_content_does(fake, media):
    res = timeline_file(fake, media["change"], top_k=2, batch_size=3)
    doc = _strict(json.dumps(res.to_json(), allow_nan=False))
    assert doc["file"] == str(media["change"]) and doc["clips_per_window"] == 1
    clip = doc["clip_seconds"]
    assert doc["window"] == clip and math.isclose(doc["hop"], clip / 2, abs_tol=1e-3)
    tl = doc["timeline"]
    assert tl[0]["start"] == 0.0 and math.isclose(tl[-1]["end"], doc["duration"], abs_tol=1e-3)
    for w in tl:
        assert set(w) == {"start", "end", "label", "score", "outputs", "notes"}
        assert set(w["outputs"]) == {"logits", "audio", "video", "fusion", "global"}
        assert all(len(v) == 2 for v in w["outputs"].values())  # top-k
        assert math.isclose(w["end"] - w["start"], clip, abs_tol=2e-3)
    # The content changes at 3 s (from the file's start): whole windows before it are c1, after it c3.
    before = [w for w in tl if w["end"] <= 3.0]
    after = [w for w in tl if w["start"] >= 3.0]
    assert len(before) >= 4 and len(after) >= 4
    assert all(w["label"] == "c1" and w["outputs"]["audio"][0]["label"] == "c1"
               and w["outputs"]["video"][0]["label"] == "c1" for w in before)
    assert all(w["label"] == "c3" and w["outputs"]["audio"][0]["label"] == "c3"
               and w["outputs"]["video"][0]["label"] == "c3" for w in after)
    switch = next(w for w in tl if w["label"] == "c3")
    assert switch["start"] < 3.0 < switch["end"] + doc["hop"]  # the first c3 window reaches past 3 s
    # interior windows read only real data: nothing to say
    assert all(w["notes"] == [] for w in tl[1:-1])
    # the picture's data: full probabilities per output, one row per window
    assert res.probs["logits"].shape == (len(tl), 4)
    np.testing.assert_allclose(res.probs["logits"].sum(1), 1.0, rtol=1e-5)
    assert plot_classes(res)[:2] in ([1, 3], [3, 1])


def test_a_file_starting_at_5_s_is_timed_from_its_start(fake, media):
    late = timeline_file(fake, media["late"]).to_json()
    ref = timeline_file(fake, media["change"]).to_json()
    assert late["timeline"][0]["start"] == 0.0
    assert any("streams start at" in n for n in late["notes"])
    # The same content at the same times from the file's start, window by window (but the last: the
    # encoder's audio priming makes the late file 64 ms longer, and the last window ends at the end).
    assert [w["label"] for w in late["timeline"]] == [w["label"] for w in ref["timeline"]]
    np.testing.assert_allclose([[w["start"], w["end"]] for w in late["timeline"][:-1]],
                               [[w["start"], w["end"]] for w in ref["timeline"][:-1]], atol=2e-3)
    # a segment of it, as a manifest row names one (seconds from the file's start)
    part = timeline_file(fake, media["late"], start=3.5, end=5.5).to_json()
    assert part["span"] == [3.5, 5.5] and part["timeline"][0]["start"] == 3.5
    assert all(w["label"] == "c3" for w in part["timeline"])


def test_outputs_disagree_where_sound_and_picture_do(fake, media, tmp_path):
    res = timeline_file(fake, media["apart"])
    tl = res.to_json()["timeline"]
    between = [w for w in tl if w["start"] >= 2.0 and w["end"] <= 4.0]
    assert between
    assert all(w["outputs"]["video"][0]["label"] == "c2" and w["outputs"]["audio"][0]["label"] == "c0"
               for w in between)
    assert all(w["outputs"]["audio"][0]["label"] == "c2" for w in tl if w["start"] >= 4.0)
    assert all(w["outputs"]["video"][0]["label"] == "c0" for w in tl if w["end"] <= 2.0)
    png = plot_timeline(res, tmp_path / "apart.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    page = plot_timeline(res, tmp_path / "apart.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "<?xml" not in page
    assert page.count("<tr>") == len(tl) + 1  # a header and a row per window
    assert curves(list(res.probs)) == ["audio", "video", "fusion"]
    assert curves(["logits", "audio", "video"]) == ["audio", "video", "logits"]  # MBT: heads and their mean
    with pytest.raises(Exception, match="png or .html"):
        plot_timeline(res, tmp_path / "apart.pdf")


def test_unequal_streams_and_a_missing_stream_are_noted(fake, media):
    doc = timeline_file(fake, media["unequal"]).to_json()
    assert any("audio runs 2.00 s past the end of the video" in n for n in doc["notes"])
    tl = doc["timeline"]
    tail = [w for w in tl if w["start"] >= 4.0]
    assert tail and all(any(n.startswith("video:") and "padding" in n for n in w["notes"]) for w in tail)
    assert all(w["notes"] == [] for w in tl if w["end"] <= 3.9)
    assert all(w["label"] == "c1" for w in tl)
    silent = timeline_file(fake, media["silent"]).to_json()
    assert silent["has_audio"] is False and "no audio stream" in silent["notes"][0]
    assert set(silent["timeline"][0]["outputs"]) == {"logits", "video", "fusion", "global"}
    assert "only video" in silent["notes"]  # the model's own note, once for the file


def test_a_truncated_file_is_answered_with_notes_where_data_is_lost(fake, media):
    doc = timeline_file(fake, media["cut"], batch_size=2).to_json()
    assert any(n.startswith("truncated") for n in doc["notes"])
    tl = doc["timeline"]
    assert math.isclose(tl[-1]["end"], 6.0, abs_tol=0.1)  # the file says 6 s: windows cover all of it
    damaged = [w for w in tl if any("truncated" in n or "nothing decodable" in n or "lost" in n for n in w["notes"])]
    clean = [w for w in tl if not w["notes"]]
    assert damaged and clean
    assert max(w["end"] for w in clean) <= min(w["end"] for w in damaged)  # the loss is at the end
    assert all(w["label"] == "c1" for w in clean if w["end"] <= 2.5)


def test_chunks_give_the_same_answer_and_bound_what_is_decoded(fake, media, monkeypatch):
    calls: list[int] = []
    decode = FileSegment.decode

    def counting(self, video_times, audio_span):
        calls.append(0 if video_times is None else len(video_times))
        return decode(self, video_times, audio_span)

    monkeypatch.setattr(FileSegment, "decode", counting)
    one = timeline_file(fake, media["change"], batch_size=64).to_json()
    assert len(calls) == 1  # every window in one decode pass
    calls.clear()
    small = timeline_file(fake, media["change"], batch_size=2).to_json()
    n = len(small["timeline"])
    assert len(calls) == math.ceil(n / 2) and max(calls) == 2 * CFG.num_frames  # at most 2 windows' frames
    assert [(w["start"], w["label"]) for w in small["timeline"]] == [(w["start"], w["label"]) for w in one["timeline"]]
    for a, b in zip(small["timeline"], one["timeline"]):
        for name in a["outputs"]:
            assert [e["label"] for e in a["outputs"][name]] == [e["label"] for e in b["outputs"][name]]
            np.testing.assert_allclose([e["score"] for e in a["outputs"][name]],
                                       [e["score"] for e in b["outputs"][name]], atol=2e-4)


def test_longer_windows_average_several_clips(fake, media):
    doc = timeline_file(fake, media["change"], window=2.0, hop=1.0).to_json()
    assert doc["clips_per_window"] == math.ceil(2.0 / doc["clip_seconds"])
    assert [w["start"] for w in doc["timeline"]] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert doc["timeline"][0]["label"] == "c1" and doc["timeline"][-1]["label"] == "c3"


# -- the command line ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_pretrained(create_model("mbt_tiny", num_classes=4, class_names=CLASSES, task="single"),
                           tmp_path_factory.mktemp("tl_model") / "m")


def test_cli_timeline_json_and_plot(model_dir, media, tmp_path, capsys):
    page = tmp_path / "t.html"
    rc = main(["predict", str(media["change"]), "--timeline", "--model", str(model_dir), "--json", "--hop", "0.5",
               "--top-k", "3", "--plot", str(page)])
    assert rc == 0
    doc = _strict(capsys.readouterr().out.strip())
    assert doc["hop"] == 0.5 and len(doc["timeline"]) >= 10
    assert set(doc["timeline"][0]["outputs"]) == {"logits", "audio", "video"}  # MBT's heads
    assert "<svg" in page.read_text()
    assert main(["predict", str(media["change"]), "--timeline", "--model", str(model_dir)]) == 0
    text = capsys.readouterr().out
    assert "window(s) of" in text and text.count(" s  ") >= 10


def test_cli_timeline_over_a_manifest(model_dir, media, tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "path", "start", "end", "labels"])
        w.writeheader()
        w.writerow({"id": "a", "path": str(media["change"]), "labels": "c1"})
        w.writerow({"id": "gone", "path": str(tmp_path / "gone.mp4"), "labels": "c1"})
        w.writerow({"id": "b", "path": str(media["late"]), "start": 1, "end": 3, "labels": "c1"})
    out = tmp_path / "tl.jsonl"
    args = ["predict", "--data", str(manifest), "--timeline", "--model", str(model_dir), "--out", str(out),
            "--no-progress"]
    assert main(args) == 0
    lines = [_strict(x) for x in out.read_text().splitlines()]
    assert [x["id"] for x in lines] == ["a", "gone", "b"]
    assert lines[0]["path"] == str(media["change"]) and "file" not in lines[0] and len(lines[0]["timeline"]) > 5
    assert "error" in lines[1] and "gone.mp4" in lines[1]["error"]
    assert lines[2]["span"] == [1.0, 3.0] and lines[2]["timeline"][0]["start"] == 1.0
    capsys.readouterr()
    assert main(args) == 0  # a complete run is left as it is
    assert "already complete" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--window", "2"], "--window goes with --timeline"),
    (["--timeline", "--clips", "2"], "--clips does not apply"),
    (["--timeline", "--window", "0"], "must be a finite number > 0"),
    (["--timeline", "--plot", "x.pdf"], "give a .png or .html"),
])
def test_cli_timeline_refuses_bad_flags_in_one_line(model_dir, media, extra, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(["predict", str(media["change"]), "--model", str(model_dir), *extra])
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_cli_timeline_plot_takes_one_video(model_dir, media, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["predict", str(media["change"]), str(media["late"]), "--timeline", "--model", str(model_dir),
              "--plot", str(tmp_path / "x.png")])
    assert info.value.code == 2 and "one video" in capsys.readouterr().err


# -- bounds: what any --window / --hop gets ---------------------------------------------------------


@pytest.mark.parametrize("flag, value, minimum", [("--hop", "1e-9", "at least 0.01 s (the audio's 10 ms mel hop)"),
                                                  ("--window", "0.004", "at least 0.01 s")])
def test_a_hop_or_window_below_the_models_time_step_is_refused_at_once(model_dir, media, tmp_path, flag, value,
                                                                       minimum, capsys):
    # before: --hop 1e-9 built windows at ~80 MB/s until memory ran out
    for where in ([str(media["change"])], ["--data", str(_manifest(tmp_path, media)), "--out", str(tmp_path / "o")]):
        assert main(["predict", *where, "--timeline", "--model", str(model_dir), flag, value]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{flag} {value.replace('1e-9', '1e-09')} s is below the model's time resolution" \
            in err[0] and minimum in err[0], err
        assert not (tmp_path / "o").exists()


def _manifest(tmp_path: Path, media: dict[str, Path]) -> Path:
    path = tmp_path / "one.csv"
    path.write_text(f"id,path\na,{media['change']}\n")
    return path


def test_a_window_longer_than_the_file_is_clipped_to_it_with_a_note(fake, media):
    doc = timeline_file(fake, media["change"], window=3000.0).to_json()  # before: 3093 clips for a 6 s file
    assert len(doc["timeline"]) == 1 and math.isclose(doc["window"], doc["duration"], abs_tol=1e-3)
    assert doc["clips_per_window"] == math.ceil(doc["duration"] / doc["clip_seconds"])
    assert any(n.startswith("--window 3000 s is longer than the 6.") for n in doc["notes"]), doc["notes"]
    assert doc["timeline"][0]["label"] in ("c1", "c3")


def test_a_hop_longer_than_the_window_says_what_is_not_read(fake, media):
    doc = timeline_file(fake, media["change"], window=1.0, hop=2.5).to_json()
    assert [w["start"] for w in doc["timeline"]] == [0.0, 2.5, 5.0]
    assert "--hop 2.5 s is longer than the 1 s window: 1.50 s after each window but the last is not read" in doc["notes"]
    assert not any("not read" in n for n in timeline_file(fake, media["change"], window=1.0, hop=1.0).notes)


def test_too_many_windows_are_refused_naming_a_hop_that_fits(fake, media, monkeypatch):
    import avfusion.infer.over_time as over_time

    monkeypatch.setattr(over_time, "MAX_WINDOWS", 5)
    with pytest.raises(ConfigError, match=r"makes 12 windows \(at most 5\): use --hop ([0-9.]+) or more") as e:
        timeline_file(fake, media["change"], window=0.5, hop=0.5)
    hop = float(str(e.value).split("use --hop ")[1].split()[0])
    assert len(timeline_file(fake, media["change"], window=0.5, hop=hop).windows) <= 5


def test_a_long_window_is_scored_by_at_most_max_clips(fake, media, monkeypatch):
    import avfusion.infer.over_time as over_time

    monkeypatch.setattr(over_time, "MAX_CLIPS_PER_WINDOW", 2)
    doc = timeline_file(fake, media["change"], window=4.0, hop=2.0).to_json()
    assert doc["clips_per_window"] == 2
    assert any("window is scored by 2 clips" in n and "not all of it is read" in n for n in doc["notes"])


def test_audio_lost_to_failed_packets_is_called_lost_not_padding(fake, tmp_path):
    from helpers.hostile import _corrupt

    from avfusion.infer.predict import predict_file

    path = _corrupt(tmp_path)  # 3 kB of garbage over the middle of a 10 s clip
    tl = timeline_file(fake, path).to_json()["timeline"]
    notes = [n for w in tl for n in w["notes"]]
    assert any("packet(s) failed to decode" in n for n in notes)
    assert any(n.startswith("audio:") and "lost to the damage" in n for n in notes), notes
    assert not any("padding" in n for n in notes), notes  # the audio covers the whole file: nothing is padding
    res = predict_file(fake, path, clips=12)
    assert any(n.startswith("audio:") and "lost to the damage" in n for n in res["notes"]), res["notes"]
    assert not any("padding" in n for n in res["notes"])
    assert res["coverage"]["audio"]["lost_samples"] > 0 and res["coverage"]["audio"]["padded_samples"] == 0
