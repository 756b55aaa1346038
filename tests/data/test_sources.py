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
    with pytest.raises(UserError, match="the command exited with status 1"):
        _ids("pipe:cat /nonexistent/shard.tar", corpus, small_cfg)


def test_cached_shard_samples_equal_uncached(shard_dir, corpus, small_cfg):
    """The decoded cache gives the same frames; its audio starts on the cached log-mel's 10 ms
    grid (tests below), so clips whose audio was asked for on that grid are equal throughout."""
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
        assert a["has_video"] == b["has_video"] and a["has_audio"] == b["has_audio"]
        if a["has_video"]:
            assert torch.equal(a["video"], b["video"]), i
        if a["has_audio"]:
            assert a["audio"].shape == b["audio"].shape and a["audio_padded"] == b["audio_padded"], i


def _raws(shard_dir):
    from avfusion.data.shards import _group

    return [raw for shard in resolve(shard_dir).shards for raw in _group(shard)]


def test_cached_log_mel_is_the_fbank_of_the_clip_it_gives(shard_dir, small_cfg):
    """A clip read from a cached sample starts on the grid of the cached log-mel (at most half a
    frame shift from where it was asked), its waveform is what the uncached sample gives there,
    and its frames are exactly the fbank of that waveform; a clip reaching past the cache (or
    the uncached sample) is computed as before."""
    import numpy as np

    from avfusion.data.audio import fbank
    from avfusion.data.shards import ShardSegment

    spec, n = small_cfg.fbank_spec, small_cfg.audio_samples
    checked = past = 0
    for raw in _raws(shard_dir):
        plain = ShardSegment(raw)
        if not plain.has_audio:
            continue
        cached = ShardSegment(raw).decode_all(fbank=spec)
        stored = len(plain._pcm) / plain.sr
        for t0 in np.linspace(plain.base - 0.05, plain.base + stored + 0.01, 23):
            span = [(float(t0), float(t0) + n / plain.sr)]
            assert plain.read(np.zeros(1), span, n).features is None
            got = cached.read(np.zeros(1), span, n)
            if got.features is None:  # only a clip reaching past the padded cache
                past += 1
                assert t0 + n / plain.sr > plain.base + stored or t0 < plain.base
                continue
            checked += 1
            # the waveform the uncached sample has at a grid point within half a frame shift of t0
            o = (t0 - plain.base) * plain.sr
            grid = [g * spec.hop for g in (int(np.floor(o / spec.hop)), int(np.ceil(o / spec.hop)))]
            assert any(abs(g - o) <= spec.hop / 2 + 1e-6 and np.array_equal(
                plain.read(np.zeros(1), [(plain.base + g / plain.sr, plain.base + (g + n) / plain.sr)], n).audio,
                got.audio) for g in grid), t0
            assert got.features.shape == (1, spec.num_frames(n), spec.num_mel_bins)
            torch.testing.assert_close(got.features, fbank(torch.from_numpy(got.audio), spec), rtol=0, atol=1e-5)
    assert checked >= 20 and past >= 1


def test_unimodal_training_reads_only_its_modality(shard_dir, corpus, small_cfg):
    """ClipConfig.modalities (training sets the model's): the other stream is neither decoded
    into the cache nor cut, and the samples say only what they carry."""
    import dataclasses

    from avfusion.data.shards import ShardSamples

    labels = LabelMap.read(corpus.labels)
    audio = ShardSamples(shard_dir, labels, dataclasses.replace(small_cfg, modalities=("audio",)), train=True,
                         cache=True)
    audio.fill_cache()
    assert all(seg._all is None for seg in audio.cache.values())  # no frames decoded
    video = ShardSamples(shard_dir, labels, dataclasses.replace(small_cfg, modalities=("video",)), train=True,
                         cache=True)
    video.fill_cache()
    assert all(seg._mel is None for seg in video.cache.values())
    both = 0
    for i in range(len(audio)):
        a, v = audio[i], video[i]
        seg = audio.cache[i]
        if seg.has_audio and seg.has_video:
            both += 1
            assert "video" not in a and not a["has_video"] and a["has_audio"], i
            assert "audio" not in v and not v["has_audio"] and v["has_video"], i
        else:  # a stream the model does not read is all there is: the sample has it (and is refused later)
            assert a["has_video"] == v["has_video"] == seg.has_video, i
    assert both >= 4


def test_partial_shard_folders_are_refused_naming_what_is_missing(corpus, small_cfg, tmp_path):
    """A folder missing a shard prepare wrote, one whose prepare has not finished all its parts, and
    one from a prepare killed before its first prepare.json: each refused in one line naming what
    is missing, and read as it is with allow_partial; a rerun of prepare writes the missing shard."""
    import shutil

    rows, labels = read_manifest(corpus.good_manifest), LabelMap.read(corpus.labels)
    whole = tmp_path / "whole"
    write_shards(rows, labels, small_cfg, whole, max_count=3)  # 3 shards
    assert len(resolve(whole).shards) == 3

    gone = tmp_path / "gone"
    shutil.copytree(whole, gone)
    (gone / "shard-000001.tar").unlink()
    with pytest.raises(UserError, match=r"1 of the 3 shard\(s\) prepare wrote are missing \(shard-000001.tar\).*"
                                        r"--allow-partial \(data.allow_partial=true\) to use the 2 shard"):
        resolve(gone)
    assert len(resolve(gone, allow_partial=True).shards) == 2
    write_shards(rows, labels, small_cfg, gone, max_count=3)  # the same command again: the shard is back
    assert len(resolve(gone).shards) == 3

    part = tmp_path / "part"
    write_shards(rows, labels, small_cfg, part, max_count=3, part=(0, 2))  # shards 0 and 2 of 3
    with pytest.raises(UserError, match=r"prepare has finished 2 of 3 shard\(s\) \(not done: shard-000001\)"):
        resolve(part)
    assert len(resolve(part, allow_partial=True).shards) == 2

    killed = tmp_path / "killed"
    shutil.copytree(part, killed)
    (killed / "prepare.json").unlink()  # killed before it merged anything
    with pytest.raises(UserError, match=r"prepare has not finished \(2 shard\(s\) recorded, no prepare.json\)"):
        resolve(killed)
    with pytest.raises(UserError, match="a partial shard folder"):  # the datasets resolve the same way
        ShardDataset(killed, labels, small_cfg, train=False)
    # a folder of tars that prepare never wrote into is taken as it is
    plain = tmp_path / "plain"
    plain.mkdir()
    shutil.copy(whole / "shard-000000.tar", plain)
    assert len(resolve(plain).shards) == 1

