"""The hostile-media corpus (tests/helpers/hostile.py) through validate, prepare, training and predict.

Valid real-world shapes (unequal stream lengths, non-zero starts, VFR, rotation, odd layouts) are
never errors; broken files are named errors everywhere, with the same reason in validate and
prepare; damage at inference is answered with notes saying what was lost."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from avfusion.data.datasets import VideoDataset
from avfusion.errors import SampleError
from avfusion.data.decode import decode, grid_times
from avfusion.data.manifest import LabelMap, read_manifest
from avfusion.data.prepare import write_shards
from avfusion.data.shards import ShardDataset
from avfusion.data.validate import validate_rows
from avfusion.errors import UserError
from helpers.hostile import CASES, REACHES_DAMAGE, markdown_table
from helpers.media import make_media, read_index

IDS = [c.name for c in CASES]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("hostile")
    files = {c.name: c.build(root) for c in CASES}
    labels = root / "labels.csv"
    labels.write_text("index,mid,display_name\n0,/m/dog,Dog\n1,/m/cat,Cat\n2,/m/bird,Bird\n")
    manifest = root / "hostile.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "path", "labels"])
        w.writerows([name, str(path), "Dog"] for name, path in files.items())
    return {"root": root, "files": files, "labels": labels, "manifest": manifest}


@pytest.fixture(scope="module")
def validated(hostile, small_cfg) -> dict[str, list]:
    rows = read_manifest(hostile["manifest"])
    probs = validate_rows(rows, LabelMap.read(hostile["labels"]), small_cfg)
    by_id: dict[str, list] = {c.name: [] for c in CASES}
    for p in probs:
        by_id[p.id].append(p)
    return by_id


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_validate_verdict(case, validated):
    probs = validated[case.name]
    errors = [p.reason for p in probs if p.severity == "error"]
    warnings = [p.reason for p in probs if p.severity == "warning"]
    kind, _, reason = case.validate.partition(": ")
    if kind == "ok":
        assert not errors and not warnings, probs
    elif kind == "warning":
        assert not errors and any(w.startswith(reason) for w in warnings), probs
    else:
        assert any(e.startswith(reason) for e in errors), probs
    if case.also:
        assert any(p.reason.startswith(case.also) for p in probs), probs


def test_prepare_writes_exactly_what_validate_passes(hostile, validated, small_cfg, tmp_path):
    rows = read_manifest(hostile["manifest"])
    labels = LabelMap.read(hostile["labels"])
    res = write_shards(rows, labels, small_cfg, tmp_path / "shards", max_count=4)
    failed = {f["id"]: f["reason"] for f in res.failures}
    first_error = {i: next(p.reason for p in ps if p.severity == "error")
                   for i, ps in validated.items() if any(p.severity == "error" for p in ps)}
    assert failed == first_error  # the same rows, for the same reason
    assert res.ok == len(CASES) - len(failed) == sum(c.prepare == "written" for c in CASES)
    # every written sample streams back as finite, full-size tensors
    seen = []
    for s in ShardDataset(tmp_path / "shards", labels, small_cfg, train=True):
        seen.append(s["id"])
        for m in ("video", "audio"):
            if s[f"has_{m}"]:
                assert torch.isfinite(s[m]).all()
        if s["has_video"]:
            assert s["video"].shape == (3, small_cfg.num_frames, *small_cfg.image_size)
    assert sorted(seen) == sorted(c.name for c in CASES if c.prepare == "written")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_training_sample_verdict(case, hostile, small_cfg):
    labels = LabelMap.read(hostile["labels"])
    (row,) = [r for r in read_manifest(hostile["manifest"]) if r.id == case.name]
    if case.name in REACHES_DAMAGE:  # many clips over the whole file, so one reaches the damage
        cfg = type(small_cfg)(**{**small_cfg.__dict__, "eval_clips": 16})
        ds = VideoDataset([row], labels, cfg, train=False, on_error="mark", damaged="error")
    else:
        ds = VideoDataset([row], labels, small_cfg, train=True, seed=0, on_error="mark")
    s = ds[0]
    if case.train == "sample":
        assert "error" not in s, s.get("error")
        assert s["has_video"] or s["has_audio"]
        for m in ("video", "audio"):
            if s[f"has_{m}"]:
                assert torch.isfinite(s[m]).all()
        assert s["damage"] == []
    else:
        assert s["error"].startswith(f"row {case.name!r} (line ")
        assert case.train.partition(": ")[2] in s["error"] and "\n" not in s["error"]
        ds.on_error = "raise"
        with pytest.raises(SampleError, match=case.name):
            ds[0]


@pytest.fixture(scope="module")
def tiny_model():
    import avfusion

    torch.manual_seed(0)
    return avfusion.create_model("zorro_vit_tiny", num_classes=3, class_names=["Dog", "Cat", "Bird"]).eval()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_predict_verdict(case, hostile, tiny_model):
    from avfusion.infer.predict import predict_file

    clips = 16 if case.name in REACHES_DAMAGE else 4
    kind, _, rest = case.predict.partition(", note: ") if "note:" in case.predict else case.predict.partition(": ")
    if case.predict.startswith("error"):
        with pytest.raises(UserError, match=case.predict.partition(": ")[2]):
            predict_file(tiny_model, hostile["files"][case.name], top_k=1, clips=clips)
        return
    res = predict_file(tiny_model, hostile["files"][case.name], top_k=1, clips=clips)
    json.dumps(res, allow_nan=False)  # strict JSON
    assert res["outputs"]["logits"][0]["score"] is not None
    if rest:
        assert any(n.startswith(rest) for n in res["notes"]), res["notes"]
    else:
        assert not any(n.startswith(("truncated", "damaged")) for n in res["notes"]), res["notes"]
        assert res["coverage"]["damage"] == []


def test_docs_table_is_the_corpus():
    docs = (Path(__file__).parents[2] / "docs" / "data.md").read_text(encoding="utf-8")
    assert markdown_table() in docs, "docs/data.md: paste tests/helpers/hostile.py markdown_table()"


# -- the timeline, in detail --------------------------------------------------------------------


def test_non_zero_start_places_rows_from_the_files_start(tmp_path, small_cfg):
    """Row times count from the file's first content (the earliest stream start, a player's 0:00):
    in a file whose video starts at 5 s (its AAC audio, with its 1024 priming samples, at 4.936 s),
    row second 1.0 is 4.936 + 1.0; frames and the audio click written at content time 1.5 s are
    found at their timestamps."""
    p = make_media(tmp_path / "s5.mp4", duration=3.0, start=5.0, rate=16000, clicks=(1.5,))
    from avfusion.data.clips import ClipConfig, ClipProcessor, FileSegment

    seg = FileSegment(str(p), 1.0, 2.0, small_cfg)
    tl = seg.timeline
    assert tl.video.start == pytest.approx(5.0) and tl.audio.start == pytest.approx(5.0 - 1024 / 16000)
    assert tl.origin == tl.audio.start and seg.start == pytest.approx(tl.origin + 1.0)
    assert seg.end == pytest.approx(tl.origin + 2.0)
    d = seg.decode(grid_times(6.0, 6.2, 25), (6.4, 6.6))
    assert [read_index(f) for f in d.video] == [25, 26, 27, 28, 29]  # frame i at 5 + i / 25
    click = d.audio_t0 + np.argmax(d.audio) / 16000  # absolute time of the click
    assert abs(click - (5.0 + 1.5)) < 2e-3
    cfg = ClipConfig(**{**small_cfg.__dict__, "eval_clips": 1})
    s = ClipProcessor(cfg, train=False)(seg)
    assert s["damage"] == [] and s["video_padded"] == 0 and s["audio_padded"] == 0


def test_window_past_one_streams_end_pads_that_stream_only(hostile, small_cfg):
    """Audio runs 2 s past the video: a clip there holds the last frame (counted as padding),
    reads real audio, and is not an error."""
    from avfusion.data.clips import ClipProcessor, FileSegment

    seg = FileSegment(str(hostile["files"]["audio_longer_2s"]), 3.5, 4.5, small_cfg)
    s = ClipProcessor(small_cfg, train=True)(seg, torch.Generator().manual_seed(0))
    assert s["damage"] == []
    assert s["video_padded"] == small_cfg.num_frames and s["audio_padded"] == 0


def test_rotation_turns_frames_upright(tmp_path):
    """A 160x120 frame stored with a 90-degree display matrix is shown 120 wide, 160 high, its
    top-left corner turned to the bottom-left (counter-clockwise, as ffmpeg's autorotate does)."""
    import av

    path = tmp_path / "rot.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 160, 120, "yuv420p"
        s.set_display_rotation(90)
        img = np.zeros((120, 160, 3), np.uint8)
        img[:40, :40] = 255  # a white top-left corner
        for i in range(5):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = i
            for pk in s.encode(f):
                c.mux(pk)
        for pk in s.encode(None):
            c.mux(pk)
    d = decode(path, grid_times(0, 0.2, 25), None)
    assert d.rotation == 90 and d.video.shape == (5, 160, 120, 3)
    frame = d.video[0].mean(-1)
    assert frame[-40:, :40].mean() > 200 and frame[:40, :40].mean() < 50  # bottom-left bright, top-left dark


def test_vfr_frames_are_the_ones_shown(hostile):
    """VFR: frame i lasts 40 ms (i even) or 120 ms (i odd); at time t the decoder gives the frame a
    player shows at t."""
    d = decode(hostile["files"]["vfr"], grid_times(0, 0.8, 25), None)
    starts = np.cumsum([0] + [0.04 if i % 2 == 0 else 0.12 for i in range(40)])
    want = [int(np.searchsorted(starts, t + 1e-6, side="right") - 1) for t in grid_times(0, 0.8, 25)]
    assert [read_index(f) for f in d.video] == want
    assert d.video_valid == len(want)


def test_training_error_is_one_line_naming_the_row(hostile, small_cfg):
    labels = LabelMap.read(hostile["labels"])
    (row,) = [r for r in read_manifest(hostile["manifest"]) if r.id == "cut50_index_first"]
    with pytest.raises(SampleError) as e:
        VideoDataset([row], labels, small_cfg, train=True, seed=0)[0]
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("row 'cut50_index_first' (line ") and "truncated" in msg


def _train(hostile, tmp_path, names, *extra):
    from avfusion.cli import main

    tmp_path.mkdir(parents=True, exist_ok=True)
    m = tmp_path / f"train_{len(names)}.csv"
    with open(m, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "path", "labels"])
        w.writerows([n, str(hostile["files"][n]), "Dog" if i % 2 else "Cat"] for i, n in enumerate(names))
    out = tmp_path / f"run_{len(names)}"
    return main(["train", "--model", "zorro_vit_tiny", "--train", str(m), "--labels", str(hostile["labels"]),
                 "--out", str(out), "--max-steps", "3", "--batch-size", "4", "--workers", "0", "--seed", "0",
                 "run.progress=false", "run.log_every=1", "optim.name=adamw", "optim.lr=0.001", *extra]), out


def test_training_runs_over_every_valid_shape(hostile, tmp_path, capsys):
    """`avfusion train` on all the files validate passes (unequal streams, starts at 1 s / 5 s,
    VFR, rotation, audio-only, video-only, 1x1, 4000x3000, 8 channels at 96 kHz, a unicode name)."""
    valid = [c.name for c in CASES if c.train == "sample"]
    rc, out = _train(hostile, tmp_path, valid)
    assert rc == 0, capsys.readouterr().err
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in rows)
    assert "skipped_samples" not in rows[-1]


def test_training_on_a_broken_file_is_one_line_or_a_counted_skip(hostile, tmp_path, capsys):
    names = ["audio_longer_400ms", "start_5s", "zero_bytes", "vfr", "rotated_90", "video_only", "cut50_index_first",
             "audio_only"]
    rc, _ = _train(hostile, tmp_path, names)
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("avfusion train: error:")]
    assert ("'zero_bytes'" in line and "empty file" in line) or ("'cut50_index_first'" in line and "truncated" in line)
    assert "data.skip_bad_samples" in line
    rc, out = _train(hostile, tmp_path / "skip", names, "data.skip_bad_samples=8")
    err = capsys.readouterr().err
    assert rc == 0, err
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    n = rows[-1]["skipped_samples"]
    assert 1 <= n <= 6 and err.count("skipped sample (") == n  # each one named on stderr


@pytest.mark.parametrize("modality", ["audio", "video"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_unimodal_training_sample_reads_one_stream_with_the_same_verdict(case, modality, hostile, small_cfg):
    """ClipConfig.modalities (a unimodal model's training): the same verdict as reading both
    streams, and the model's stream the same tensor; the other stream is not in the sample
    unless it is all the file has."""
    import dataclasses

    labels = LabelMap.read(hostile["labels"])
    (row,) = [r for r in read_manifest(hostile["manifest"]) if r.id == case.name]
    # no SpecAugment: its masks are drawn after the video's crop, which an audio-only read skips
    cfg = dataclasses.replace(small_cfg, augment=dataclasses.replace(small_cfg.augment, freq_mask=0, time_mask=0))
    one_cfg = dataclasses.replace(cfg, modalities=(modality,))
    both = VideoDataset([row], labels, cfg, train=True, seed=0, on_error="mark")[0]
    one = VideoDataset([row], labels, one_cfg, train=True, seed=0, on_error="mark")[0]
    assert ("error" in one) == ("error" in both), (one.get("error"), both.get("error"))
    if "error" in both:
        return
    other = "video" if modality == "audio" else "audio"
    if both[f"has_{modality}"]:
        assert torch.equal(one[modality], both[modality])
        assert not one[f"has_{other}"] and other not in one
    else:  # the file lacks the model's stream: the sample is what the file has, as before
        assert one[f"has_{other}"] == both[f"has_{other}"]
