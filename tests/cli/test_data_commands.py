import json

import numpy as np
import pytest
import torch

from avfusion.cli import main as cli_main
from avfusion.cli.prepare import main as prepare_main
from avfusion.cli.validate import main as validate_main
from avfusion.data.decode import decode, grid_times
from avfusion.data.manifest import LabelMap, read_manifest
from avfusion.data.shards import ShardDataset, ShardSegment, _group

SMALL = ["--num-frames", "4", "--spec-frames", "100", "--short-side", "64", "--no-progress"]


def test_validate_reports_every_broken_row(corpus, capsys):
    rc = validate_main([str(corpus.manifest), "--labels", str(corpus.labels), "--json", *SMALL])
    out = json.loads(capsys.readouterr().out)
    assert rc == 1
    errors = {p["id"] for p in out["problems"] if p["severity"] == "error"}
    warnings = {p["id"] for p in out["problems"] if p["severity"] == "warning"}
    assert errors == corpus.expected_errors
    assert warnings == corpus.expected_warnings
    assert all(set(p) >= {"id", "severity", "reason"} for p in out["problems"])
    reasons = {p["id"]: p["reason"] for p in out["problems"] if p["severity"] == "error"}
    assert "truncated" in reasons["truncated"]
    assert reasons["zero"] == "empty file (0 bytes)"
    assert reasons["missing"] == "file not found"
    assert "Walrus" in reasons["unknown_label"]
    assert "duplicate id" in reasons["good_a"]
    assert out["rows"] == 14 and out["rows_with_errors"] == 7


def test_validate_good_manifest_exits_0_and_prints_table(corpus, capsys):
    rc = cli_main(["validate", str(corpus.good_manifest), "--labels", str(corpus.labels), *SMALL])
    text = capsys.readouterr().out
    assert rc == 0
    assert "warning" in text and "no audio stream" in text and "0 errors" in text


def test_validate_empty_manifest(tmp_path, corpus, capsys):
    m = tmp_path / "empty.csv"
    m.write_text("id,path,start,end,labels\n")
    assert validate_main([str(m), "--labels", str(corpus.labels), "--json", *SMALL]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["problems"][0]["reason"].startswith("empty manifest")
    m.write_text("")
    assert validate_main([str(m), "--labels", str(corpus.labels), *SMALL]) == 1


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = prepare_main([str(corpus.manifest), "--labels", str(corpus.labels), "--out", str(out),
                           "--json", "--shard-size", "2", "--video-format", "jpeg", *SMALL])
    return rc, json.loads(buf.getvalue()), out


def test_prepare_records_failures_and_writes_good_rows(prepared, corpus):
    rc, summary, out = prepared
    assert rc == 0
    assert summary["ok"] == 7 and summary["failed"] == 7
    failed = {f["id"] for f in summary["failures"]}
    # the duplicate id fails (second occurrence), the first good_a is written
    assert failed == corpus.expected_errors
    assert len(summary["shards"]) == 4  # 7 samples, 2 per shard
    assert json.loads((out / "prepare.json").read_text())["ok"] == 7


def test_shard_round_trip(prepared, corpus, small_cfg):
    _, summary, out = prepared
    samples = [s for url in summary["shards"] for s in _group(url)]
    assert len(samples) == 7
    by_id = {ShardSegment(s).meta["id"]: ShardSegment(s) for s in samples}
    seg = by_id["good_a"]
    assert seg.start == 0.0 and seg.end == pytest.approx(3.0)
    # audio: the same samples as a direct decode, up to int16 quantisation
    d = decode(corpus.files["good_a"], grid_times(0, 3, 25), (0, 3), short_side=64)
    wav, valid = seg.audio(0, 3)
    assert valid == 48000 and np.abs(wav - d.audio).max() <= 1 / 32767 + 1e-6
    # frames: same count and size, JPEG-close to the direct decode, same source frames
    frames, v = seg.frames(grid_times(0, 3, 25))
    assert frames.shape == d.video.shape == (75, 64, 85, 3) and v == 75
    assert np.abs(frames.astype(int) - d.video.astype(int)).mean() < 3
    from helpers.media import read_index
    assert [read_index(f) for f in frames] == list(range(75))
    assert not by_id["noaudio"].has_audio and by_id["noaudio"].has_video
    assert not by_id["novideo"].has_video and by_id["novideo"].has_audio


def test_shard_dataset_streams_by_rank_and_worker(prepared, corpus, small_cfg):
    _, summary, out = prepared
    labels = LabelMap.read(corpus.labels)
    ids_per_rank = []
    for rank in range(2):
        ds = ShardDataset(out, labels, small_cfg, train=True, shuffle=4, rank=rank, world_size=2)
        loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
        ids_per_rank.append([s["id"] for s in loader])
    all_ids = ids_per_rank[0] + ids_per_rank[1]
    assert sorted(all_ids) == sorted(["good_a", "good_b", "six", "odd", "noaudio", "novideo", "short"])
    ds = ShardDataset(out, labels, small_cfg, train=True, shuffle=0)
    s = next(iter(ds))
    assert s["video"].shape == (3, 4, 48, 48) and s["audio"].shape == (100, 128)
    assert s["label"].shape == (3,)


def test_shard_and_file_give_same_eval_views(prepared, corpus, small_cfg):
    _, summary, out = prepared
    labels = LabelMap.read(corpus.labels)
    ds = ShardDataset(out, labels, small_cfg, train=False)
    from_shard = {s["id"]: s for s in ds}
    from avfusion.data.datasets import VideoDataset

    rows = read_manifest(corpus.good_manifest)
    fds = VideoDataset(rows, labels, small_cfg, train=False)
    s_file = fds[0]
    s_shard = from_shard[s_file["id"]]
    assert s_file["video"].shape == s_shard["video"].shape == (6, 3, 4, 48, 48)
    assert s_file["audio"].shape == s_shard["audio"].shape == (6, 100, 128)
    assert (s_file["video"] - s_shard["video"]).abs().mean() < 0.05  # JPEG
    # int16 audio: quiet mel bins of the (AAC-filtered) synthetic noise floor move a little
    diff = (s_file["audio"] - s_shard["audio"]).abs()
    assert diff.mean() < 0.01 and diff.max() < 0.15
    assert torch.equal(s_file["label"], s_shard["label"])


def test_cli_usage_and_unreadable_inputs(corpus, tmp_path, capsys):
    assert cli_main(["--help"]) == 0
    usage = capsys.readouterr().out
    assert "validate" in usage and "prepare" in usage
    assert cli_main(["validate", str(corpus.manifest), "--labels", str(tmp_path / "nope.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("avfusion validate: error:") and "nope.csv" in err and err.count("\n") == 1
    assert cli_main(["prepare", str(tmp_path / "nope.csv"), "--labels", str(corpus.labels), "--out",
                     str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("avfusion prepare: error:") and err.count("\n") == 1


def test_validate_without_decoding_finds_truncation_in_the_index(corpus, capsys):
    rc = validate_main([str(corpus.manifest), "--labels", str(corpus.labels), "--json", "--no-decode", *SMALL])
    probs = json.loads(capsys.readouterr().out)["problems"]
    errors = {p["id"] for p in probs if p["severity"] == "error"}
    assert rc == 1 and errors == corpus.expected_errors  # the mp4 index points past the file's end
    assert any(p["id"] == "truncated" and p["reason"].startswith("truncated:") for p in probs)


def test_prepare_text_summary(corpus, tmp_path, capsys):
    rc = prepare_main([str(corpus.manifest), "--labels", str(corpus.labels), "--out", str(tmp_path / "s"), *SMALL])
    out = capsys.readouterr().out
    assert rc == 0 and "7 rows written" in out and "7 failed" in out and "missing: file not found" in out


def test_shard_shuffle_buffer_and_epochs(prepared, corpus, small_cfg):
    _, summary, out = prepared
    labels = LabelMap.read(corpus.labels)
    ordered = [s["id"] for s in ShardDataset(out, labels, small_cfg, train=False)]
    ds = ShardDataset(out, labels, small_cfg, train=True, shuffle=4, seed=0)
    e0 = [s["id"] for s in ds]
    ds.set_epoch(1)
    e1 = [s["id"] for s in ds]
    assert sorted(e0) == sorted(e1) == sorted(ordered)
    assert e0 != ordered and e0 != e1
    assert [s["id"] for s in ShardDataset(out, labels, small_cfg, train=True, shuffle=4, seed=0)] == e0


def test_prepare_empty_manifest(corpus, tmp_path, capsys):
    m = tmp_path / "empty.csv"
    m.write_text("id,path,start,end,labels\n")
    rc = prepare_main([str(m), "--labels", str(corpus.labels), "--out", str(tmp_path / "s"), "--json", *SMALL])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and (out["ok"], out["failed"], out["failures"], out["shards"]) == (0, 0, [], [])


def test_h264_shards_round_trip(corpus, tmp_path, small_cfg, capsys):
    from helpers.media import read_index

    rc = prepare_main([str(corpus.good_manifest), "--labels", str(corpus.labels), "--out", str(tmp_path / "h"),
                       "--json", *SMALL])  # default video format: h264
    summary = json.loads(capsys.readouterr().out)
    assert rc == 0 and summary["ok"] == 7 and summary["failed"] == 0
    by_id = {ShardSegment(s).meta["id"]: ShardSegment(s) for url in summary["shards"] for s in _group(url)}
    frames, v = by_id["good_a"].frames(grid_times(0, 3, 25))
    assert frames.shape == (75, 64, 84, 3) and v == 75  # 85 columns cropped to even
    assert [read_index(f) for f in frames] == list(range(75))
    frames, _ = by_id["odd"].frames(np.array([0.5, 0.1, 0.5]))  # any order, repeats
    assert [read_index(f) for f in frames] == [12, 2, 12]
    labels = LabelMap.read(corpus.labels)
    s = next(iter(ShardDataset(tmp_path / "h", labels, small_cfg, train=True)))
    assert s["video"].shape == (3, 4, 48, 48)


def test_prepare_takes_the_models_preprocessing(corpus, tmp_path, capsys):
    """--model: shards are cut with exactly the geometry training will use (flags override one value)."""
    from avfusion.models.registry import get_model_config

    want = get_model_config("zorro_vit_tiny").preprocess
    out = tmp_path / "s"
    assert prepare_main([str(corpus.good_manifest), "--labels", str(corpus.labels), "--out", str(out),
                         "--model", "zorro_vit_tiny", "--fps", "10", "--no-progress"]) == 0
    meta = ShardSegment(next(_group(str(next(out.glob("*.tar")))))).meta
    assert meta["short_side"] == want.short_side and meta["sample_rate"] == want.sample_rate and meta["fps"] == 10
    # without --fps: frames at the rate the model samples them (25 fps, every 2nd frame -> 12.5 fps)
    out2 = tmp_path / "s2"
    assert prepare_main([str(corpus.good_manifest), "--labels", str(corpus.labels), "--out", str(out2),
                         "--model", "zorro_vit_tiny", "--no-progress"]) == 0
    meta = ShardSegment(next(_group(str(next(out2.glob("*.tar")))))).meta
    assert meta["fps"] == want.fps / want.frame_stride == 12.5
    from avfusion.data.clips import ClipConfig
    from avfusion.data.shards import ShardSamples

    cfg = ClipConfig.from_model(get_model_config("zorro_vit_tiny"))
    s = ShardSamples(out2, LabelMap.read(corpus.labels), cfg, train=True)[0]  # the model reads them
    assert s["video"].shape[1] == cfg.num_frames
    capsys.readouterr()
    with pytest.raises(SystemExit):
        prepare_main([str(corpus.good_manifest), "--labels", str(corpus.labels), "--out", str(out), "--fps", "0"])
    assert "must be a finite number > 0" in capsys.readouterr().err
