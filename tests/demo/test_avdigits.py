"""AV-digits: the files decode as documented, the splits hold voices and writers out, the
degradations are what the docstring says, and generation is deterministic."""

from __future__ import annotations

import csv
from pathlib import Path

import av
import numpy as np
import pytest

from avfusion.demo import avdigits as A

N = {"train": 6, "val": 3, "test": 6}
KW = dict(size=64, fps=12.5, duration=2.0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("avdigits")
    summary = A.generate(out, N["train"], N["val"], N["test"], seed=1, workers=0, **KW)
    return out, summary


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_assets_are_packaged_and_small():
    voices = A.list_voices()
    assert len(voices) == 16 and "allison" in voices
    for v in voices:
        assert sorted(p.name for p in (A.ASSETS / v).glob("*.flac")) == [f"{d}.flac" for d in range(10)]
    assert (A.ASSETS / "ATTRIBUTION.md").exists()
    total = sum(p.stat().st_size for p in A.ASSETS.rglob("*") if p.is_file())
    assert total < 3e6
    x = A.load_recording(A.ASSETS / "allison" / "7.flac")
    assert x.dtype == np.float32 and 0.2 * 16000 < len(x) < 1.2 * 16000 and 0.5 < np.abs(x).max() <= 1.0


def test_label_map_and_manifests(data):
    out, summary = data
    labels = _read(out / "labels.csv")
    assert [r["index"] for r in labels] == [str(i) for i in range(10)]
    assert [r["mid"] for r in labels] == [f"/avdigits/{i}" for i in range(10)]
    assert [r["display_name"] for r in labels] == list(A.DIGIT_NAMES)
    for split in A.SPLITS:
        rows = _read(out / f"{split}.csv")
        assert list(rows[0])[:5] == ["id", "path", "start", "end", "labels"]
        assert len(rows) == N[split] == len({r["id"] for r in rows})
        for r in rows:
            assert (out / r["path"]).is_file() and r["path"].startswith(f"{split}/")
            assert r["labels"] in A.DIGIT_NAMES and r["start"] == r["end"] == ""
            assert r["condition"] in A.CONDITIONS
        assert summary["manifests"][split] == str(out / f"{split}.csv")


def test_clips_decode_as_documented(data):
    out, _ = data
    num_frames, num_samples = 25, 32000
    for path in sorted(out.glob("*/*.mp4")):
        with av.open(str(path)) as c:
            v, a = c.streams.video[0], c.streams.audio[0]
            assert v.codec_context.name == "h264" and (v.width, v.height) == (64, 64)
            assert v.average_rate == 12.5
            assert a.codec_context.name == "aac" and a.rate == 16000 and a.channels == 1
            assert abs(c.duration / 1e6 - 2.0) <= 1 / 12.5
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert len(frames) == num_frames and frames[0].shape == (64, 64, 3)
        with av.open(str(path)) as c:
            audio = np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)
        assert audio.shape[0] == 1 and abs(audio.shape[1] - num_samples) <= 1024  # one AAC frame
        assert 0.05 < np.abs(audio).max() < 1.0


def test_splits_hold_out_voices_and_writers(data):
    out, summary = data
    voices = A.split_voices()
    assert summary["voices"] == voices
    assert set(voices["train"]).isdisjoint(voices["test"]) and set(voices["train"]).isdisjoint(voices["val"])
    assert set(voices["val"]).isdisjoint(voices["test"])
    assert len(voices["train"]) == 11 and "allison" in voices["train"]
    blocks = [A.SPLIT_ROWS[s] for s in A.SPLITS]
    assert blocks[0][0] == 0 and blocks[-1][1] == A.NUM_IMAGES
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))  # contiguous, disjoint
    _, targets = A.load_images()
    for split in A.SPLITS:
        lo, hi = A.SPLIT_ROWS[split]
        for r in _read(out / f"{split}.csv"):
            assert r["voice"] in voices[split]
            assert lo <= int(r["image"]) < hi
            assert A.DIGIT_NAMES[targets[int(r["image"])]] == r["labels"]


def test_condition_fractions(data):
    out, summary = data
    for split in A.SPLITS:
        conds = [r["condition"] for r in _read(out / f"{split}.csv")]
        expect = {c: N[split] // 3 for c in A.CONDITIONS}
        assert {c: conds.count(c) for c in A.CONDITIONS} == expect == summary["counts"][split]
    assert A.condition_counts(600, A.DEFAULT_CONDITIONS) == {c: 200 for c in A.CONDITIONS}
    assert A.condition_counts(200, A.DEFAULT_CONDITIONS) == {"clean": 67, "noisy_audio": 67, "occluded_video": 66}
    assert A.condition_counts(10, {"clean": 1.0}) == {"clean": 10}
    assert sum(A.condition_counts(7, {"clean": 0.5, "noisy_audio": 0.3, "occluded_video": 0.2}).values()) == 7


def test_digits_are_balanced():
    plan = A._plan("train", 600, 0, A.load_images()[1], ["allison"], A.DEFAULT_CONDITIONS)
    assert np.bincount([c["digit"] for c in plan]).tolist() == [60] * 10


def test_occlusion_removes_the_digit():
    images, _ = A.load_images()
    a, b = images[0], images[1]  # a zero and a one
    r = lambda: np.random.default_rng(5)  # noqa: E731
    assert np.array_equal(A.render_video(a, True, r(), 25, 64), A.render_video(b, True, r(), 25, 64))
    assert not np.array_equal(A.render_video(a, False, r(), 25, 64), A.render_video(b, False, r(), 25, 64))


def test_noise_buries_the_word():
    word = A.load_recording(A.ASSETS / "flite-kal" / "3.flac")
    for noisy, (lo, hi) in [(False, A.CLEAN_SNR_DB), (True, A.NOISY_SNR_DB)]:
        for seed in range(5):
            x = A.render_audio(word, noisy, np.random.default_rng(seed), 32000)
            speech, noise = A.render_audio(word, noisy, np.random.default_rng(seed), 32000, parts=True)
            assert x.shape == (32000,) and x.dtype == np.float32 and np.abs(x).max() <= 0.9 + 1e-6
            np.testing.assert_allclose(x, speech + noise, atol=1e-6)
            on = np.flatnonzero(speech)
            assert abs((on[0] + on[-1]) / 2 - 16000) < 0.1 * 16000 + 1  # centred +- 0.1 s
            rms = lambda v: np.sqrt(np.mean(v ** 2))  # noqa: E731
            snr = 20 * np.log10(rms(speech[on[0]:on[-1] + 1]) / rms(noise))
            assert lo - 0.5 <= snr <= hi + 0.5
    n = 32000
    noise = A.pink_noise(n, np.random.default_rng(0))
    assert abs(np.sqrt(np.mean(noise ** 2)) - 1.0) < 1e-4
    spec = np.abs(np.fft.rfft(noise)) ** 2
    f = np.fft.rfftfreq(n, 1 / 16000)
    assert spec[(f > 100) & (f < 200)].mean() > 10 * spec[(f > 2000) & (f < 4000)].mean()  # 1/f


def test_deterministic_and_worker_independent(data, tmp_path):
    out, _ = data
    seen = []
    again = A.generate(tmp_path / "again", N["train"], N["val"], N["test"], seed=1, workers=2,
                       progress=lambda done, total: seen.append((done, total)), **KW)
    total = sum(N.values())
    assert seen == [(i, total) for i in range(1, total + 1)]
    for path in sorted(out.glob("*/*.mp4")):
        assert path.read_bytes() == (Path(again["out_dir"]) / path.relative_to(out)).read_bytes()
    for name in ("labels.csv", "train.csv", "val.csv", "test.csv"):
        assert (out / name).read_text() == (tmp_path / "again" / name).read_text()
    other = A.generate(tmp_path / "other", 3, 0, 0, seed=2, workers=0, **KW)
    assert (Path(other["out_dir"]) / "train.csv").read_text() != (out / "train.csv").read_text()


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown conditions"):
        A.generate(tmp_path, 3, 0, 0, conditions={"foggy": 1.0})
    with pytest.raises(ValueError, match="even"):
        A.generate(tmp_path, 3, 0, 0, size=63)
