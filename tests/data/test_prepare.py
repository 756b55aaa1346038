"""Parallel, partitioned, resumable `avfusion prepare`: the same shards whatever the workers,
parts or interruptions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from avfusion.cli import main as cli_main
from avfusion.data.manifest import LabelMap, read_manifest
from avfusion.data.prepare import write_shards
from avfusion.data.shards import _group
from avfusion.errors import ConfigError

from helpers.lock_holder import lock_holder

SMALL = ["--num-frames", "4", "--spec-frames", "100", "--short-side", "64", "--no-progress"]


def contents(out: Path) -> dict[str, list[str]]:
    """shard name -> the ids it holds, in order."""
    return {p.name: [json.loads(s["json"])["id"] for s in _group(str(p))] for p in sorted(out.glob("*.tar"))}


def test_workers_give_the_same_shards(corpus, small_cfg, tmp_path):
    rows, labels = read_manifest(corpus.manifest), LabelMap.read(corpus.labels)
    one = write_shards(rows, labels, small_cfg, tmp_path / "w1", max_count=3, workers=1)
    two = write_shards(rows, labels, small_cfg, tmp_path / "w2", max_count=3, workers=2)
    assert contents(tmp_path / "w1") == contents(tmp_path / "w2")
    assert one.ok == two.ok == 7 and one.failures == two.failures and one.complete and two.complete
    # shard i holds rows [3i, 3i+3) that decode: 14 rows -> 5 shards, in manifest order
    ids = [i for names in contents(tmp_path / "w1").values() for i in names]
    failed = {(f["id"], f["line"]) for f in one.failures}
    assert ids == [r.id for r in rows if (r.id, r.line) not in failed]


def test_parts_are_disjoint_and_complete(corpus, small_cfg, tmp_path):
    rows, labels = read_manifest(corpus.manifest), LabelMap.read(corpus.labels)
    whole = write_shards(rows, labels, small_cfg, tmp_path / "whole", max_count=2)
    out = tmp_path / "parts"
    seen = []
    for k in range(3):
        res = write_shards(rows, labels, small_cfg, out, max_count=2, part=(k, 3))
        mine = {Path(s).name for s in res.shards} - set(seen)
        assert all(int(name[6:12]) % 3 == k for name in mine)  # part k writes shards i = k mod 3
        seen += sorted(mine)
        assert res.complete == (k == 2)
    assert len(seen) == len(set(seen))  # disjoint
    assert contents(out) == contents(tmp_path / "whole")  # together complete, the same samples
    merged = json.loads((out / "prepare.json").read_text())
    assert merged["ok"] == whole.ok and merged["failed"] == whole.failed and merged["complete"]


def test_rerun_skips_done_shards_and_other_settings_are_refused(corpus, small_cfg, tmp_path):
    rows, labels = read_manifest(corpus.manifest), LabelMap.read(corpus.labels)
    out = tmp_path / "s"
    write_shards(rows, labels, small_cfg, out, max_count=4)
    stamp = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    again = write_shards(rows, labels, small_cfg, out, max_count=4)
    assert again.skipped == again.total == 4 and {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")} == stamp
    # a folder started when audio_mean / audio_std were always stored as numbers resumes alike
    settings = out / ".done" / "settings.json"
    saved = json.loads(settings.read_text())
    assert saved["clips"]["preprocess"]["audio_norm"] == "mbt" and saved["clips"]["preprocess"]["audio_mean"] is None
    saved["clips"]["preprocess"].update(audio_mean=1.102, audio_std=2.762)
    settings.write_text(json.dumps(saved))
    assert write_shards(rows, labels, small_cfg, out, max_count=4).skipped == 4
    with pytest.raises(ConfigError, match="shard_size"):
        write_shards(rows, labels, small_cfg, out, max_count=5)
    with pytest.raises(ConfigError, match="ids"):
        write_shards(rows[:-1], labels, small_cfg, out, max_count=4)


@pytest.mark.slow  # slow tier: SIGKILL fault injection
def test_killed_prepare_resumes_to_the_same_shards(corpus, tmp_path):
    out, ref = tmp_path / "killed", tmp_path / "ref"
    args = ["prepare", str(corpus.good_manifest), "--labels", str(corpus.labels), "--shard-size", "1", *SMALL]
    assert cli_main([*args, "--out", str(ref)]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "avfusion", *args, "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / ".done").glob("shard-*.json"))) < 2 and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list((out / ".done").glob("shard-*.json")))
    assert 2 <= done < 7, f"killed after {done} shards; the test needs a kill mid-run"
    assert cli_main([*args, "--out", str(out)]) == 0
    assert contents(out) == contents(ref)
    assert not list(out.glob("*.tmp"))
    assert json.loads((out / "prepare.json").read_text())["complete"]


def test_a_second_prepare_of_the_same_part_is_refused_naming_the_first(corpus, tmp_path, capsys):
    out = tmp_path / "shards"
    args = ["prepare", str(corpus.good_manifest), "--labels", str(corpus.labels), *SMALL, "--shard-size", "2"]
    proc = lock_holder(out)  # a prepare into OUT is running
    try:
        assert cli_main([*args, "--out", str(out)]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and f"{out} is in use by another run (pid {proc.pid} on " in err[0]
        assert not list(out.glob("*.tar"))
    finally:
        proc.stdin.close()
        proc.wait()
    part = lock_holder(out / ".done" / "part-0-of-2")  # part 0/2 is running: part 1/2 runs beside it
    try:
        assert cli_main([*args, "--out", str(out), "--part", "0/2"]) == 2
        assert f"{out} (part 0/2) is in use by another run (pid {part.pid} on " in capsys.readouterr().err
        assert cli_main([*args, "--out", str(out), "--part", "1/2", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["shards_done"] >= 1
    finally:
        part.stdin.close()
        part.wait()
    assert cli_main([*args, "--out", str(out), "--json"]) == 0  # released: the rest is done
    assert json.loads(capsys.readouterr().out)["complete"]


def test_part_flag_is_checked(corpus, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli_main(["prepare", str(corpus.good_manifest), "--labels", str(corpus.labels), "--out", str(tmp_path),
                  "--part", "3/2"])
    assert "expected K/N with 0 <= K < N" in capsys.readouterr().err


def test_every_shard_carries_its_meta_first_and_readers_pass_over_it(corpus, small_cfg, tmp_path):
    """Each shard starts with __meta__ (what a streamed reader needs); webdataset's own reader,
    avfusion's stream reader and the random-access index yield the same samples as from the shard
    without it, in the same order."""
    import tarfile

    import webdataset as wds

    from avfusion.data.shards import SHARD_META, index_shard, read_shard_meta
    from avfusion.tasks import task_of

    rows, labels = read_manifest(corpus.manifest), LabelMap.read(corpus.labels)
    res = write_shards(rows, labels, small_cfg, tmp_path / "s", max_count=3, workers=2)
    prepared = json.loads((tmp_path / "s" / "prepare.json").read_text())
    per_shard = {Path(p).name: len(ids) for p, ids in zip(res.shards, contents(tmp_path / "s").values())}
    assert prepared["shard_samples"] == per_shard and sum(per_shard.values()) == res.ok == 7
    for path in res.shards:
        with tarfile.open(path) as tf:
            members = tf.getmembers()
        assert members[0].name == SHARD_META
        meta = read_shard_meta(f"pipe:cat {path}")  # a stream, cut off after the member
        assert meta == read_shard_meta(path)
        assert meta["samples"] == per_shard[Path(path).name] and meta["shard"] == int(Path(path).stem[-6:])
        assert meta["task"] == task_of(bool(labels.heads), (len(r.labels) for r in rows))
        assert meta["labels"] == {"sha1": labels.digest(), "classes": labels.num_classes}
        assert (meta["shards_total"], meta["rows"], meta["shard_size"]) == (5, 14, 3)
        assert meta["clips"]["preprocess"]["fps"] == small_cfg.preprocess.fps
        # the same shard without the member: what every reader yields is unchanged
        bare = tmp_path / f"bare-{Path(path).name}"
        with tarfile.open(path) as src, tarfile.open(bare, "w") as dst:
            for m in src.getmembers()[1:]:
                dst.addfile(m, src.extractfile(m))
        assert read_shard_meta(str(bare)) is None
        keys = [k for k, _, _ in index_shard(str(bare))]
        assert [k for k, _, _ in index_shard(path)] == keys
        assert [s["__key__"] for s in _group(path)] == keys
        assert [s["__key__"] for s in wds.WebDataset(path, shardshuffle=False)] == keys
