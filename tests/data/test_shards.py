"""Shards (data/shards.py) written by data/prepare.py's write_shards: split by rank and worker,
a short segment's context, and damaged samples named in the error."""

import json

import pytest

from avfusion.data.manifest import LabelMap
from avfusion.data.shards import ShardDataset, ShardSegment, _group, split_shards


def test_split_shards_disjoint_and_complete():
    shards = [f"s{i}" for i in range(23)]
    seen = []
    for rank in range(3):
        for worker in range(2):
            seen += split_shards(shards, rank, 3, worker, 2)
    assert sorted(seen) == sorted(shards) and len(seen) == len(set(seen))


def test_short_segment_context_is_the_same_from_file_and_shard(corpus, tmp_path, small_cfg):
    from avfusion.data.datasets import VideoDataset
    from avfusion.data.manifest import Row

    rows = [Row("mid", str(corpus.files["good_a"]), 1.0, 1.2, ["Dog"])]  # 0.2 s inside a 3 s file
    labels = LabelMap.read(corpus.labels)
    res = write_shards_for(rows, labels, small_cfg, tmp_path)
    meta = ShardSegment(next(_group(res.shards[0]))).meta
    assert meta["data_start"] == pytest.approx(1.1 - small_cfg.audio_seconds / 2)
    s_file = VideoDataset(rows, labels, small_cfg, train=False)[0]
    s_shard = next(iter(ShardDataset(tmp_path, labels, small_cfg, train=False)))
    assert s_file["audio_padded"] == s_shard["audio_padded"] == 0  # context, not padding
    assert s_file["video_padded"] == s_shard["video_padded"] == 0
    diff = (s_file["audio"] - s_shard["audio"]).abs()
    assert diff.mean() < 0.01 and diff.max() < 0.15
    assert (s_file["video"] - s_shard["video"]).abs().mean() < 0.05


def write_shards_for(rows, labels, cfg, out):
    from avfusion.data.prepare import write_shards

    res = write_shards(rows, labels, cfg, out)
    assert res.ok == len(rows), res.failures
    return res


def test_shard_samples_with_missing_fields_name_the_shard_and_sample(tmp_path, corpus, small_cfg):
    import webdataset as wds

    from avfusion.errors import InputError

    path = tmp_path / "shard-000000.tar"
    with wds.TarWriter(str(path)) as w:
        w.write({"__key__": "000000007", "json": json.dumps({"id": "x", "labels": ["Dog"]}).encode()})
    labels = LabelMap.read(corpus.labels)
    with pytest.raises(InputError) as e:
        next(iter(ShardDataset(tmp_path, labels, small_cfg, train=False)))
    msg = str(e.value)
    assert str(path) in msg and "sample 000000007" in msg and "'start'" in msg and "'fps'" in msg
    with wds.TarWriter(str(path)) as w:
        w.write({"__key__": "000000008", "txt": b"no json here"})
    with pytest.raises(InputError, match="sample 000000008: no .json member"):
        next(iter(ShardDataset(tmp_path, labels, small_cfg, train=False)))


@pytest.mark.parametrize("payload", [b"[1, 2]", b'"text"', b"3"])
def test_a_json_member_that_is_not_an_object_names_shard_and_member(tmp_path, corpus, small_cfg, payload):
    """Valid JSON that is not an object: an InputError naming the shard and the sample, read by
    random access (the index) and streamed alike (it was a TypeError in the index)."""
    import webdataset as wds

    from avfusion.data.shards import ShardSamples
    from avfusion.errors import InputError

    path = tmp_path / "shard-000000.tar"
    with wds.TarWriter(str(path)) as w:
        w.write({"__key__": "000000004", "json": payload})
    labels = LabelMap.read(corpus.labels)
    for read in (lambda: ShardSamples(path, labels, small_cfg, train=False),
                 lambda: next(iter(ShardDataset(path, labels, small_cfg, train=False)))):
        with pytest.raises(InputError, match=r"shard-000000.tar sample 000000004: its .json member is not an object"):
            read()

