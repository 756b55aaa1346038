"""Batch inference over a corpus (infer/corpus.py, infer/embed.py; `avfusion predict --data`, `avfusion
embed`): one result per row in source order, errors as results, start/end segments, embeddings per
family, a real SIGKILL then a rerun (no duplicates, nothing recomputed, the same results), the
record refusing another model, and a 2-process torchrun run equal to a single process."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from avfusion.cli import main
from avfusion.data.clips import ClipConfig, ClipProcessor, FileSegment
from avfusion.data.manifest import LabelMap, read_manifest
from avfusion.data.prepare import write_shards
from avfusion.infer.corpus import JsonlParts, RowResult, claim, parts_dir, predict_corpus, record_path
from avfusion.infer.embed import embed_corpus
from avfusion.infer.predict import answer, predict_file, segment_streams
from avfusion.models.pretrained import load_pretrained, save_pretrained
from avfusion.models.registry import create_model

from helpers.avclips import write_clip, write_labels
from helpers.lock_holder import lock_holder

CLASSES = ["c0", "c1", "c2", "c3"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
    [str(Path(__file__).parents[2] / "src"), os.environ.get("PYTHONPATH", "")])}


def _strict(line: str) -> dict:
    def refuse(name: str) -> None:
        raise AssertionError(f"not strict JSON: {name}")

    return json.loads(line, parse_constant=refuse)


def _lines(path: Path) -> list[dict]:
    return [_strict(x) for x in path.read_text().splitlines()]


def _write_manifest(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "path", "start", "end", "labels"])
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("corpus")
    rows = []
    for c in range(4):
        for j in range(2):
            path = root / f"clip_{c}_{j}.mp4"
            write_clip(path, c, seed=10 * c + j)
            rows.append({"id": path.stem, "path": str(path), "labels": f"c{c}"})
    write_clip(root / "silent.mp4", 2, seed=99, audio=False)
    (root / "broken.mp4").write_bytes(b"")  # zero bytes: a row that cannot be used
    rows.insert(3, {"id": "broken", "path": str(root / "broken.mp4"), "labels": "c0"})
    rows.append({"id": "silent", "path": str(root / "silent.mp4"), "labels": "c2"})
    # The first 0.6 s of clip_1_0: shorter than an audio clip (0.97 s), so the window reads around it.
    rows.append({"id": "clip_1_0_start", "path": str(root / "clip_1_0.mp4"), "start": 0, "end": 0.6,
                 "labels": "c1"})
    manifest = _write_manifest(root / "manifest.csv", rows)
    # Many rows (the same files under other ids) for the kill: a run cannot finish between two polls.
    many = _write_manifest(root / "many.csv", [{**r, "id": f"{r['id']}_{k}"} for k in range(3) for r in rows])
    labels = write_labels(root / "labels.csv")
    models = {}
    for name in ("zorro_vit_tiny", "mbt_tiny"):
        model = create_model(name, num_classes=4, class_names=CLASSES, task="single")
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():  # random weights everywhere, so that rows and clips give different answers
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        models[name] = save_pretrained(model, root / name)
    clip_cfg = ClipConfig.from_model(load_pretrained(models["zorro_vit_tiny"]).cfg)
    res = write_shards(read_manifest(manifest), LabelMap.read(labels), clip_cfg, root / "shards", max_count=3)
    assert res.failed == 1 and len(res.shards) == 4  # the zero-byte file is prepare's failure
    return {"root": root, "manifest": manifest, "many": many, "ids": [r["id"] for r in rows], "models": models,
            "shards": root / "shards", "shard_files": res.shards}


@pytest.fixture(scope="module")
def zorro(corpus):
    return load_pretrained(corpus["models"]["zorro_vit_tiny"])


@pytest.fixture(scope="module")
def reference(corpus, zorro, tmp_path_factory) -> list[dict]:
    """An uninterrupted single-process prediction over the manifest."""
    out = tmp_path_factory.mktemp("ref") / "preds.jsonl"
    summary = predict_corpus(zorro, corpus["manifest"], out, top_k=2, clips=2, batch_size=3)
    assert (summary.rows, summary.errors, summary.computed) == (11, 1, 11)
    return _lines(out)


def _same_predictions(a: list[dict], b: list[dict]) -> None:
    """Equal lines; scores within float noise (batches of other sizes round the 4th decimal differently)."""
    assert [x["id"] for x in a] == [x["id"] for x in b]
    for x, y in zip(a, b):
        assert x.keys() == y.keys() and x.get("error") == y.get("error") and x.get("notes") == y.get("notes")
        for name, top in x.get("outputs", {}).items():
            assert [e["label"] for e in top] == [e["label"] for e in y["outputs"][name]], (x["id"], name)
            assert [e["score"] for e in top] == pytest.approx([e["score"] for e in y["outputs"][name]], abs=2e-4)


# -- predict --------------------------------------------------------------------------------


def test_predict_manifest_one_line_per_row_in_order(corpus, zorro, reference):
    assert [x["id"] for x in reference] == corpus["ids"]
    by_id = {x["id"]: x for x in reference}
    assert "empty file" in by_id["broken"]["error"] and by_id["broken"]["path"].endswith("broken.mp4")
    assert "outputs" not in by_id["broken"]
    good = [x for x in reference if "error" not in x]
    assert all(set(x["outputs"]) == {"logits", "audio", "video", "fusion", "global"} for x in good if x["has_audio"])
    # a file without audio: the video-only outputs, and a note saying so (the single-file words)
    silent = by_id["silent"]
    assert silent["has_audio"] is False and set(silent["outputs"]) == {"logits", "video", "fusion", "global"}
    assert silent["notes"][0].startswith("silent.mp4 has no audio stream: unimodal prediction from video only")
    # the whole file answers as single-file predict does (one shared function)
    single = predict_file(zorro, corpus["root"] / "clip_2_1.mp4", top_k=2, clips=2)
    _same_predictions([{"id": "clip_2_1", **{k: v for k, v in single.items() if k in by_id["clip_2_1"]}}],
                      [by_id["clip_2_1"]])
    assert single["coverage"] == by_id["clip_2_1"]["coverage"]


def test_predict_uses_the_rows_start_and_end(corpus, zorro, reference):
    row = next(x for x in reference if x["id"] == "clip_1_0_start")
    whole = next(x for x in reference if x["id"] == "clip_1_0")
    # the 0.6 s segment: its centred audio window reaches before the file's start (padding), the
    # whole file's does not
    assert row["coverage"]["audio"]["padded_samples"] > 0
    assert whole["coverage"]["audio"]["padded_samples"] == 0
    assert any("of what the clips read is padding" in n for n in row["notes"])
    # and it is exactly the answer for that segment
    cfg = ClipConfig.from_model(zorro.cfg, eval_clips=2, eval_crops=1)
    seg = FileSegment(str(corpus["root"] / "clip_1_0.mp4"), 0.0, 0.6, cfg)
    sample = ClipProcessor(cfg, train=False)(seg)
    with torch.no_grad():
        out = zorro({m: sample[m] for m in ("audio", "video")})
    scores = {n: v.mean(0) for n, v in {"logits": out.logits, **out.outputs}.items()}
    expected = answer(zorro.cfg, sample, segment_streams(seg), scores, out.notes, "clip_1_0.mp4", 2)
    _same_predictions([{"id": row["id"], "outputs": expected["outputs"], "notes": expected["notes"]}],
                      [{k: row[k] for k in ("id", "outputs", "notes")}])


def test_predict_over_shards_in_shard_order_with_prepares_failures(corpus, zorro, tmp_path):
    out = tmp_path / "shards.jsonl"
    summary = predict_corpus(zorro, corpus["shards"], out, top_k=2, clips=2, batch_size=2)
    lines = _lines(out)
    written = [i for i in corpus["ids"] if i != "broken"]
    assert [x["id"] for x in lines] == written + ["broken"]  # prepare's failure is a row too, at the end
    assert "prepare could not use it (empty file" in lines[-1]["error"]
    assert all("outputs" in x and "coverage" in x and "path" not in x for x in lines[:-1])
    assert (summary.rows, summary.errors, summary.computed) == (11, 1, 10)


# -- embed ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name, outputs", [("zorro_vit_tiny", {"audio", "video", "fusion", "global"}),
                                           ("mbt_tiny", {"audio", "video"})])
def test_embed_shapes_per_family(corpus, tmp_path, name, outputs):
    model = load_pretrained(corpus["models"][name])
    out = tmp_path / "emb.npz"
    embed_corpus(model, corpus["manifest"], out, clips=2, batch_size=4)
    with np.load(out) as z:
        good = [i for i in corpus["ids"] if i != "broken"]
        assert z["ids"].tolist() == good
        assert set(z.files) == outputs | {"ids", "failed_ids", "failed_reasons", "meta"}
        assert z["failed_ids"].tolist() == ["broken"] and "empty file" in z["failed_reasons"][0]
        silent = good.index("silent")
        for o in outputs:
            x = z[o]
            assert x.shape == (len(good), 64) and x.dtype == np.float32
            # a row without audio has no audio output (NaN); everything else is there
            assert np.isnan(x[silent]).all() == (o == "audio")
            assert np.isfinite(np.delete(x, silent, axis=0)).all()
        meta = json.loads(str(z["meta"]))
        assert meta["model"]["name"] == name and meta["outputs"] == {o: 64 for o in outputs}
        # one row by hand: the features averaged over its 2 clips
        cfg = ClipConfig.from_model(model.cfg, eval_clips=2, eval_crops=1)
        sample = ClipProcessor(cfg, train=False)(FileSegment(str(corpus["root"] / "clip_3_1.mp4"), None, None, cfg))
        with torch.no_grad():
            feats = model({m: sample[m] for m in ("audio", "video")}).features
        k = good.index("clip_3_1")
        for o in outputs:
            np.testing.assert_allclose(z[o][k], feats[o].mean(0).numpy(), rtol=1e-4, atol=1e-5)


# -- resume ---------------------------------------------------------------------------------


def _popen(args: list[str]) -> subprocess.Popen:
    # its own process group: the kill takes a pipe: source's shell with it
    return subprocess.Popen([sys.executable, "-m", "avfusion", *args], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)


def _kill_when(proc: subprocess.Popen, ready) -> None:
    try:
        while not ready():
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow  # slow tier: SIGKILL fault injection
def test_predict_killed_then_rerun_gives_each_row_once_as_an_uninterrupted_run(corpus, zorro, tmp_path, capsys):
    out = tmp_path / "preds.jsonl"
    args = ["predict", "--data", str(corpus["many"]), "--model", str(corpus["models"]["zorro_vit_tiny"]),
            "--out", str(out), "--top-k", "2", "--clips", "2", "--batch-size", "1", "--device", "cpu"]
    part = parts_dir(out) / "rank-000.jsonl"
    _kill_when(_popen(args), lambda: part.exists() and part.read_bytes().count(b"\n") >= 1)
    total = 3 * len(corpus["ids"])
    before = part.read_bytes().count(b"\n")  # whole lines: what the kill left
    assert 1 <= before < total and not out.exists()

    assert main(args) == 0
    summary = capsys.readouterr().out
    assert f"{total} rows, 3 errors; {total - before} computed now, {before} done by an earlier run" in summary
    lines = _lines(out)
    assert [x["id"] for x in lines] == [f"{i}_{k}" for k in range(3) for i in corpus["ids"]]
    assert not parts_dir(out).exists() and json.loads(record_path(out).read_text())["complete"] is True
    uninterrupted = tmp_path / "uninterrupted.jsonl"
    predict_corpus(zorro, corpus["many"], uninterrupted, top_k=2, clips=2, batch_size=4)
    _same_predictions(lines, _lines(uninterrupted))


@pytest.mark.slow  # slow tier: SIGKILL fault injection
def test_embed_killed_then_rerun_over_shards(corpus, tmp_path, capsys):
    # A pipe: source that holds the run after the first shard until the flag file goes:
    # the kill always comes mid-run.
    block = tmp_path / "block"
    block.touch()
    first, *rest = corpus["shard_files"]
    source = "::".join([f"pipe:sh -c 'cat {first}; if [ -e {block} ]; then exec sleep 600; fi'", *rest])
    out = tmp_path / "emb.npz"
    args = ["embed", "--data", source, "--model", str(corpus["models"]["zorro_vit_tiny"]), "--out", str(out),
            "--clips", "2", "--batch-size", "1", "--chunk-size", "1", "--device", "cpu"]
    chunks = lambda: sorted(parts_dir(out).glob("chunk-*.npz"))  # noqa: E731
    _kill_when(_popen(args), lambda: len(chunks()) >= 1)
    before = len(chunks())  # chunks of one row
    assert 1 <= before < 3 and not out.exists()
    block.unlink()

    assert main(args) == 0
    assert f"10 rows, 0 errors; {10 - before} computed now, {before} done by an earlier run" in capsys.readouterr().out
    reference = tmp_path / "reference.npz"
    assert main([*args[:6], str(reference), *args[7:]]) == 0
    with np.load(out) as z, np.load(reference) as ref:
        assert z["ids"].tolist() == ref["ids"].tolist() == [i for i in corpus["ids"] if i != "broken"]
        for o in ("audio", "video", "fusion", "global"):
            np.testing.assert_allclose(z[o], ref[o], rtol=1e-5, atol=1e-6, equal_nan=True)


def test_a_complete_out_is_left_alone_and_another_model_refused(corpus, tmp_path, capsys):
    out = tmp_path / "p.jsonl"
    args = ["predict", "--data", str(corpus["manifest"]), "--model", str(corpus["models"]["zorro_vit_tiny"]),
            "--out", str(out), "--clips", "1"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert err.strip() == f"avfusion predict: 1 of 11 row(s) could not be used (listed in {out})"
    text = out.read_text()
    assert main(args) == 0
    assert capsys.readouterr().out.strip() == f"{out} is already complete (11 rows, 1 error): nothing to do"
    assert out.read_text() == text

    other = [*args[:4], str(corpus["models"]["mbt_tiny"]), *args[5:]]
    assert main(other) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "belongs to another run: model zorro_vit_tiny" in err[0] and "now mbt_tiny" in err[0]
    assert main([*args[:-1], "2"]) == 2
    assert "belongs to another run: clips 1 (now 2)" in capsys.readouterr().err
    stranger = tmp_path / "someone_elses.jsonl"
    stranger.write_text("{}\n")
    assert main([*args[:5], "--out", str(stranger)]) == 2
    assert "no someone_elses.jsonl.run.json says which run wrote it" in capsys.readouterr().err


def test_a_second_run_into_the_same_out_is_refused_while_one_runs(corpus, tmp_path, capsys):
    out = tmp_path / "p.jsonl"
    _, lock = claim(out, {"settings": {}, "model": {}, "source": {}})  # a run recorded...
    lock.close()
    proc = lock_holder(parts_dir(out))  # ...and running in another process
    try:
        assert main(["predict", "--data", str(corpus["manifest"]), "--model", str(corpus["models"]["mbt_tiny"]),
                     "--out", str(out)]) == 2
    finally:
        proc.stdin.close()
        proc.wait()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and f"{out} is in use by another run (pid {proc.pid} on " in err[0]


def test_an_unreadable_shard_stops_the_run_in_one_line_and_keeps_what_was_done(corpus, tmp_path, capsys):
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"not a tar" * 100)
    out = tmp_path / "p.jsonl"
    args = ["predict", "--data", f"{corpus['shard_files'][0]}::{garbage}", "--model",
            str(corpus["models"]["mbt_tiny"]), "--out", str(out), "--workers", "1", "--batch-size", "1"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{garbage}: not a readable tar" in err[0] and "Traceback" not in err[0], err
    assert not out.exists() and JsonlParts(parts_dir(out), 0).done() == {"clip_0_0", "clip_0_1", "clip_1_0"}


def test_a_torn_last_line_is_no_result_and_is_cut_before_appending(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    (folder / "rank-000.jsonl").write_text('000000001\t{"id": "a", "error": "x"}\n000000002\t{"id": "b", "er')
    parts = JsonlParts(folder, 0)
    assert parts.done() == {"a"}
    parts.add(RowResult("b", "000000002", error="y"))
    parts.close()
    assert parts.done() == {"a", "b"}
    out = tmp_path / "out.jsonl"
    assert parts.merge(out, [], {}) == (2, 2)
    assert _lines(out) == [{"id": "a", "error": "x"}, {"id": "b", "error": "y"}]


# -- torchrun -------------------------------------------------------------------------------


def test_torchrun_two_processes_give_each_row_once_as_one_process(corpus, reference, tmp_path):
    out = tmp_path / "ddp.jsonl"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "avfusion",
           "predict", "--data", str(corpus["manifest"]), "--model", str(corpus["models"]["zorro_vit_tiny"]),
           "--out", str(out), "--top-k", "2", "--clips", "2", "--batch-size", "2", "--device", "cpu"]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("11 rows, 1 error; 11 computed now") == 1  # rank 0 alone reports
    _same_predictions(_lines(out), reference)


# -- the command line -----------------------------------------------------------------------


@pytest.mark.parametrize("argv, expected", [
    ("predict --data m.csv", "--data needs --out"),
    ("predict a.mp4 --data m.csv --out o.jsonl", "give video files or --data SOURCE, not both"),
    ("predict a.mp4 --out o.jsonl", "--out goes with --data"),
    ("predict --manifest m.csv --out o.jsonl --json", "--json is for video files"),
    ("embed --model m --out o.npz", "required: --data"),
    ("embed --shards s --model m", "required: --out"),
    ("embed --data s --model m --out o.npz --chunk-size 0", "argument --chunk-size: must be a positive integer"),
])
def test_bad_flags_are_argparse_errors(argv, expected, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv.split())
    assert info.value.code == 2
    assert expected in capsys.readouterr().err.strip().splitlines()[-1]


def test_a_missing_source_is_one_line(corpus, tmp_path, capsys):
    assert main(["embed", "--data", str(tmp_path / "nope.csv"), "--model", str(corpus["models"]["mbt_tiny"]),
                 "--out", str(tmp_path / "e.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.csv: no such manifest, shard folder or file" in err[0]
