"""Data sources: a manifest, or shards as a folder, a .tar, a brace pattern, a list or a URL."""

from __future__ import annotations

import pytest
import torch

from avfusion.data.prepare import write_shards
from avfusion.data.shards import ShardDataset
from avfusion.data.sources import resolve
from avfusion.errors import UserError
from avfusion.data.manifest import LabelMap, read_manifest


@pytest.fixture(scope="module")
def shard_dir(corpus, small_cfg, tmp_path_factory):
    out = tmp_path_factory.mktemp("src_shards")
    res = write_shards(read_manifest(corpus.good_manifest), LabelMap.read(corpus.labels), small_cfg, out, max_count=3)
    assert res.ok == 7 and len(res.shards) == 3
    return out


def _ids(src, corpus, cfg):
    return sorted(s["id"] for s in ShardDataset(src, LabelMap.read(corpus.labels), cfg, train=False))


def test_every_way_to_name_shards_reads_the_same_samples(shard_dir, corpus, small_cfg):
    want = sorted(r.id for r in read_manifest(corpus.good_manifest))
    folder = resolve(shard_dir)
    assert folder.is_shards and len(folder.shards) == 3
    assert folder.labels == shard_dir / "labels.csv" and folder.prepared["ok"] == 7
    pattern = str(shard_dir / "shard-{000000..000002}.tar")
    listed = [str(shard_dir / f"shard-00000{i}.tar") for i in range(3)]
    for spec in (shard_dir, pattern, listed, "::".join(listed), f"pipe:cat {shard_dir}/shard-{{000000..000002}}.tar"):
        assert _ids(spec, corpus, small_cfg) == want, spec
    assert resolve(listed[0]).shards == listed[:1]  # one .tar


def test_a_manifest_is_a_manifest(corpus):
    src = resolve(corpus.good_manifest)
    assert not src.is_shards and src.manifest == corpus.good_manifest


@pytest.mark.parametrize("spec,match", [
    ("nope.csv", "no such manifest"),
    ("shards/shard-{000000..000002}.tar", "not found"),
    ("", "no data source"),
])
def test_bad_sources_are_named(spec, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=match):
        resolve(spec)


def test_empty_folder_and_other_files(tmp_path):
    with pytest.raises(UserError, match="a folder without shards"):
        resolve(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="not a manifest"):
        resolve(tmp_path / "notes.txt")


def test_failing_pipe_is_one_error(corpus, small_cfg):
    with pytest.raises(UserError, match="the command failed"):
        _ids("pipe:cat /nonexistent/shard.tar", corpus, small_cfg)


def test_cached_shard_samples_equal_uncached(shard_dir, corpus, small_cfg):
    from avfusion.data.shards import ShardSamples
    from avfusion.utils.seeding import seed_all

    labels = LabelMap.read(corpus.labels)
    plain = ShardSamples(shard_dir, labels, small_cfg, train=True)
    cached = ShardSamples(shard_dir, labels, small_cfg, train=True, cache=True)
    cached.fill_cache()
    assert len(cached.cache) == len(cached) == 7
    for i in range(len(plain)):
        seed_all(i)
        a = plain[i]
        seed_all(i)
        b = cached[i]
        for k in ("video", "audio"):
            if a.get(f"has_{k}"):
                assert torch.equal(a[k], b[k]), (i, k)
