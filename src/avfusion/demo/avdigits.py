"""AV-digits: a small, embedded audio-visual data set in which fusion matters.

Every clip is an mp4 (H.264 video + AAC audio, written with PyAV) of ``duration`` seconds: a
handwritten digit from scikit-learn's bundled digits (``sklearn.datasets.load_digits``, real
handwriting, 8x8 grey levels) scaled up and moving along a random straight path with jitter over a
noisy coloured background, and, centred in the sound track, the same digit spoken by one of 16
voices (``assets/digits/<voice>/<digit>.flac``: espeak-ng, CMU Flite and Asterisk's Allison,
made by ``scripts/make_digit_recordings.sh``; see ``assets/digits/ATTRIBUTION.md``) over pink
noise. The label is the digit (10 classes, single-label).

Degradation design (what makes fusion matter). Each split is divided, exactly up to rounding
(largest remainder), into three conditions, shuffled:

===================  ========  =========================================================
condition            fraction  what is done
===================  ========  =========================================================
``clean``            1/3       both modalities mildly degraded only: speech at 10-20 dB SNR
                               over pink noise, pixel noise sigma 6 on the picture
``noisy_audio``      1/3       the word is buried in pink noise at -30 to -25 dB SNR (not
                               recognisable); the picture is clean
``occluded_video``   1/3       an opaque textured box covers the digit in every frame
                               (it moves with the digit); the sound is clean
===================  ========  =========================================================

So an audio-only model can at best be right on the ``clean`` and ``occluded_video`` clips plus a
tenth of the rest (about 70%), the same for a video-only model, while a model that uses both can
approach 100%. The fractions are the ``conditions`` argument of :func:`generate`.

Held-out voices and writers. The test split uses voices and handwriting that training never
sees, and so does the validation split (so that model selection on val measures the same kind of
generalisation as test):

- voices (``SPLIT_VOICES``): test ``espeak-en-nyc-f4``, ``espeak-en-gb-scotland``, ``flite-slt``;
  val ``espeak-en-midlands-f5``, ``flite-rms``; train the other 11 (7 espeak-ng voices, Flite
  kal, kal16 and awb, and Allison).
- writers: the sklearn digits are the test part of UCI's "Optical Recognition of Handwritten
  Digits" (1797 images written by 13 people) and carry no writer ids. We use row blocks as a
  proxy: train draws images from rows ``[0, 1258)`` (70%), val from ``[1258, 1438)`` (10%),
  test from ``[1438, 1797)`` (the last 20%). Evidence that blocks group writing styles: a
  logistic regression on the pixels trained on the first 80% of rows scores 0.90 on the last 20%,
  but 0.97 on a random 20% hold-out (an RBF SVM: 0.95 vs 0.99).

Each clip also varies the speaking rate (x0.88-1.12, by resampling), the word's placement (centred,
+-0.1 s, so any centred window of 1 s or more holds the whole word), digit size, ink and background
colours, and path. Everything is drawn from ``numpy.random.default_rng`` seeded by ``(seed,
split, index)``, so a clip depends only on the seed and its position, not on the number of worker
processes; with the same PyAV/FFmpeg build the files are byte-identical.

Output layout (``out_dir``)::

    labels.csv              index,mid,display_name    (0,/avdigits/0,zero ...)
    train.csv val.csv test.csv
                            id,path,start,end,labels,condition,voice,image
                            (path relative to out_dir; start/end empty = whole clip;
                             labels = display name; image = row of load_digits())
    train/train-00000.mp4 ...  val/...  test/...
    avdigits.json           the parameters, per-split counts, voices and image rows
"""

from __future__ import annotations

import csv
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import numpy as np

from avfusion.errors import ConfigError

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SPLITS = ("train", "val", "test")
CONDITIONS = ("clean", "noisy_audio", "occluded_video")
DEFAULT_CONDITIONS = {"clean": 1 / 3, "noisy_audio": 1 / 3, "occluded_video": 1 / 3}

ASSETS = Path(__file__).parent / "assets" / "digits"
# Voices that training never hears; every other voice folder in ASSETS is a training voice.
SPLIT_VOICES = {
    "val": ("espeak-en-midlands-f5", "flite-rms"),
    "test": ("espeak-en-nyc-f4", "espeak-en-gb-scotland", "flite-slt"),
}
# Row blocks of load_digits() (1797 rows) standing in for disjoint writer groups.
NUM_IMAGES = 1797
SPLIT_ROWS = {"train": (0, 1258), "val": (1258, 1438), "test": (1438, 1797)}

SAMPLE_RATE = 16000
CLEAN_SNR_DB = (10.0, 20.0)
NOISY_SNR_DB = (-30.0, -25.0)
CLEAN_PIXEL_NOISE = 6.0
SPEED_RANGE = (0.88, 1.12)
ONSET_JITTER_S = 0.1


# --------------------------------------------------------------------------------------------
# Assets


def list_voices(assets: Path = ASSETS) -> list[str]:
    return sorted(p.name for p in assets.iterdir() if p.is_dir() and (p / "0.flac").exists())


def split_voices(assets: Path = ASSETS) -> dict[str, list[str]]:
    voices = list_voices(assets)
    held = {v for vs in SPLIT_VOICES.values() for v in vs}
    missing = sorted(held - set(voices))
    if missing:
        raise FileNotFoundError(f"held-out voices {missing} not found in {assets}")
    return {"train": [v for v in voices if v not in held],
            **{s: list(SPLIT_VOICES[s]) for s in ("val", "test")}}


def load_recording(path: Path) -> np.ndarray:
    """Decode a mono 16 kHz FLAC into float32 samples in [-1, 1]."""
    import av

    with av.open(str(path)) as c:
        chunks = [f.to_ndarray() for f in c.decode(audio=0)]
    x = np.concatenate(chunks, axis=1)[0]
    if x.dtype == np.int16:
        return x.astype(np.float32) / 32768.0
    return x.astype(np.float32)


def load_images() -> tuple[np.ndarray, np.ndarray]:
    """load_digits() images (1797, 8, 8) in [0, 16] and their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    assert len(d.target) == NUM_IMAGES, len(d.target)
    return d.images.astype(np.float32), d.target.astype(np.int64)


# --------------------------------------------------------------------------------------------
# Rendering (pure numpy; one clip from its spec)


def _upscale(img: np.ndarray, s: int) -> np.ndarray:
    """Bilinear resize of an (h, w) image to (s, s)."""
    h, w = img.shape

    def axis(n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = np.clip((np.arange(s) + 0.5) * n_in / s - 0.5, 0, n_in - 1)
        i0 = np.floor(x).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, (x - i0).astype(np.float32)

    y0, y1, wy = axis(h)
    x0, x1, wx = axis(w)
    top = img[y0][:, x0] * (1 - wx) + img[y0][:, x1] * wx
    bot = img[y1][:, x0] * (1 - wx) + img[y1][:, x1] * wx
    return top * (1 - wy[:, None]) + bot * wy[:, None]


def render_video(image: np.ndarray, occluded: bool, rng: np.random.Generator,
                 num_frames: int, size: int) -> np.ndarray:
    """(T, H, W, 3) uint8 frames: the 8x8 digit scaled up, moving over a noisy background."""
    t, h = num_frames, size
    # Background: a random dark colour with a linear gradient.
    base = rng.uniform(10, 90, 3).astype(np.float32)
    slope = rng.uniform(-30, 30, (2, 3)).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:h].astype(np.float32) / h - 0.5
    bg = base + yy[..., None] * slope[0] + xx[..., None] * slope[1]  # (H, W, 3)
    # Digit: bilinear upscale, alpha from the grey level, bright random ink.
    s = int(rng.integers(round(0.34 * h), round(0.47 * h) + 1))
    alpha = np.clip(_upscale(image, s) / 12.0, 0.0, 1.0)[..., None]  # (s, s, 1)
    ink = rng.uniform(170, 255, 3).astype(np.float32)
    # Path: a straight line between two random points plus per-frame jitter.
    lo, hi = 0, h - s
    p0, p1 = rng.uniform(lo, hi, 2), rng.uniform(lo, hi, 2)
    a = np.linspace(0.0, 1.0, t)[:, None]
    pos = np.rint(p0 + (p1 - p0) * a + rng.normal(0, 0.7, (t, 2))).astype(int).clip(lo, hi)  # (T, 2) y, x
    frames = np.broadcast_to(bg, (t, h, h, 3)).astype(np.float32)  # (T, H, W, 3)
    for k, (y, x) in enumerate(pos):
        patch = frames[k, y:y + s, x:x + s]
        frames[k, y:y + s, x:x + s] = patch * (1 - alpha) + ink * alpha
    if occluded:
        # An opaque textured box covering the whole digit in every frame, moving with it.
        m = int(rng.integers(2, 6))
        colour = rng.uniform(60, 200, 3).astype(np.float32)
        texture = rng.normal(0, 12, (s + 2 * m, s + 2 * m, 1)).astype(np.float32)
        for k, (y, x) in enumerate(pos):
            y0, x0 = max(y - m, 0), max(x - m, 0)
            y1, x1 = min(y + s + m, h), min(x + s + m, h)
            frames[k, y0:y1, x0:x1] = (colour + texture)[y0 - (y - m):y1 - (y - m), x0 - (x - m):x1 - (x - m)]
    frames += CLEAN_PIXEL_NOISE * rng.standard_normal(frames.shape, dtype=np.float32)
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


def pink_noise(n: int, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Unit-RMS noise with a 1/f power spectrum (flat below 50 Hz)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / sample_rate)
    spec /= np.sqrt(np.maximum(f, 50.0))
    x = np.fft.irfft(spec, n)
    return (x / (np.sqrt(np.mean(x ** 2)) + 1e-12)).astype(np.float32)


def render_audio(word: np.ndarray, noisy: bool, rng: np.random.Generator, num_samples: int,
                 sample_rate: int = SAMPLE_RATE, parts: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """(N,) float32 mono: the word (rate-perturbed, centred +- jitter) over pink noise at the
    condition's SNR (word RMS over its own span / noise RMS). ``parts=True`` returns the scaled
    (speech, noise) tracks whose sum is the mix."""
    speed = rng.uniform(*SPEED_RANGE)
    n_word = min(int(round(len(word) / speed)), num_samples)
    word = np.interp(np.linspace(0, len(word) - 1, n_word), np.arange(len(word)), word).astype(np.float32)
    centre = (num_samples - n_word) / 2 + rng.uniform(-ONSET_JITTER_S, ONSET_JITTER_S) * sample_rate
    onset = int(np.clip(round(centre), 0, num_samples - n_word))
    snr_db = rng.uniform(*(NOISY_SNR_DB if noisy else CLEAN_SNR_DB))
    word_rms = float(np.sqrt(np.mean(word ** 2))) + 1e-12
    noise = pink_noise(num_samples, rng, sample_rate) * (word_rms / 10 ** (snr_db / 20))
    speech = np.zeros(num_samples, np.float32)
    speech[onset:onset + n_word] = word
    gain = np.float32(rng.uniform(0.3, 0.9) / (np.abs(speech + noise).max() + 1e-12))  # never clips
    if parts:
        return speech * gain, noise * gain
    return (speech + noise) * gain


# --------------------------------------------------------------------------------------------
# Encoding


def write_mp4(path: str | os.PathLike, frames: np.ndarray, audio: np.ndarray, fps: Fraction,
              sample_rate: int = SAMPLE_RATE, gop: int = 12) -> None:
    """Write (T, H, W, 3) uint8 frames as H.264 (libx264 ultrafast, yuv420p) and (N,) float audio
    as AAC mono into an mp4. Single-threaded so that output bytes are reproducible."""
    import av

    with av.open(str(path), "w", format="mp4") as c:
        v = c.add_stream("libx264", rate=fps)
        v.width, v.height = frames.shape[2], frames.shape[1]
        v.pix_fmt = "yuv420p"
        v.codec_context.gop_size = gop
        v.codec_context.thread_count = 1
        v.options = {"preset": "ultrafast", "tune": "zerolatency", "crf": "23"}
        a = c.add_stream("aac", rate=sample_rate, layout="mono")
        a.bit_rate = 48000
        a.options = {"aac_coder": "fast"}  # about twice as fast as the default "twoloop"
        for img in frames:
            for pkt in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in v.encode():
            c.mux(pkt)
        hop = 1024
        for i in range(0, len(audio), hop):
            chunk = np.ascontiguousarray(audio[None, i:i + hop], dtype=np.float32)
            fr = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            fr.sample_rate = sample_rate
            fr.pts = i
            fr.time_base = Fraction(1, sample_rate)
            for pkt in a.encode(fr):
                c.mux(pkt)
        for pkt in a.encode():
            c.mux(pkt)


def _make_clip(spec: dict[str, Any]) -> str:
    rng = np.random.default_rng(spec["rng"])
    frames = render_video(spec["image_pixels"], spec["condition"] == "occluded_video", rng,
                          spec["num_frames"], spec["size"])
    audio = render_audio(spec["word"], spec["condition"] == "noisy_audio", rng,
                         spec["num_samples"], spec["sample_rate"])
    write_mp4(spec["file"], frames, audio, spec["fps"], spec["sample_rate"], spec["gop"])
    return spec["file"]


# --------------------------------------------------------------------------------------------
# The data set


def condition_counts(n: int, conditions: dict[str, float]) -> dict[str, int]:
    """Split n clips among conditions by largest remainder (exact when n * fraction is whole)."""
    names = list(conditions)
    w = np.array([conditions[k] for k in names], dtype=np.float64)
    if (w < 0).any() or w.sum() <= 0:
        raise ConfigError(f"condition fractions must be >= 0 with a positive sum, got {conditions}")
    q = n * w / w.sum()
    counts = np.floor(q + 1e-9).astype(int)
    for i in np.argsort(-(q - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    return dict(zip(names, counts.tolist()))


def _plan(split: str, n: int, seed: int, labels: np.ndarray, voices: list[str],
          conditions: dict[str, float]) -> list[dict[str, Any]]:
    """What each clip of a split shows: balanced digits, exact condition counts, image rows from
    the split's row block, voices from the split's voices."""
    rng = np.random.default_rng([seed, SPLITS.index(split), 0])
    digits = rng.permutation(np.resize(np.arange(10), n))
    conds = rng.permutation(np.repeat(list(conditions), list(condition_counts(n, conditions).values())))
    lo, hi = SPLIT_ROWS[split]
    rows_by_digit = [np.flatnonzero(labels[lo:hi] == d) + lo for d in range(10)]
    plan = []
    for i in range(n):
        d = int(digits[i])
        plan.append({
            "id": f"{split}-{i:05d}", "digit": d, "condition": str(conds[i]),
            "image": int(rng.choice(rows_by_digit[d])), "voice": str(voices[rng.integers(len(voices))]),
            "rng": [seed, SPLITS.index(split), 1, i],
        })
    return plan


def _ignore_sigint() -> None:
    """Encoder workers leave Ctrl-C (sent to the whole process group) to the parent, which stops
    them: no traceback from each worker."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def generate(out_dir: str | os.PathLike, n_train: int = 600, n_val: int = 150, n_test: int = 200,
             seed: int = 0, *, size: int = 64, fps: float = 12.5, duration: float = 2.0,
             conditions: dict[str, float] | None = None, workers: int | None = None,
             gop: int = 12, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Write AV-digits into ``out_dir`` (see the module docstring for the layout) and return a
    summary: ``{"out_dir", "labels", "manifests": {split: path}, "counts": {split: {condition:
    n}}, "voices": {split: [...]}, "image_rows": {split: [lo, hi]}, "seconds", ...}``.

    ``size``: frame height and width (even); ``fps`` and ``duration`` give ``round(fps *
    duration)`` frames; audio is 16 kHz mono. ``conditions``: fractions of ``clean``,
    ``noisy_audio``, ``occluded_video`` clips (default a third each). ``workers``: encoding
    processes (default: the CPU count, at most 8; 0 = in this process). ``progress(done, total)``
    is called as clips are written.
    """
    t0 = time.perf_counter()
    conditions = dict(DEFAULT_CONDITIONS if conditions is None else conditions)
    unknown = set(conditions) - set(CONDITIONS)
    if unknown:
        raise ConfigError(f"unknown conditions {sorted(unknown)}; known: {CONDITIONS}")
    if size % 2:
        raise ConfigError(f"size must be even (yuv420p), got {size}")
    fps_q = Fraction(fps).limit_denominator(1000)
    num_frames = int(round(float(fps_q) * duration))
    num_samples = int(round(SAMPLE_RATE * duration))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    images, labels = load_images()
    voices = split_voices()
    words: dict[tuple[str, int], np.ndarray] = {}
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    plans = {s: _plan(s, sizes[s], seed, labels, voices[s], conditions) for s in SPLITS}

    specs = []
    for split, plan in plans.items():
        (out / split).mkdir(exist_ok=True)
        for c in plan:
            key = (c["voice"], c["digit"])
            if key not in words:
                words[key] = load_recording(ASSETS / c["voice"] / f"{c['digit']}.flac")
            specs.append({
                "file": str(out / split / f"{c['id']}.mp4"), "rng": c["rng"], "condition": c["condition"],
                "image_pixels": images[c["image"]], "word": words[key], "num_frames": num_frames,
                "size": size, "num_samples": num_samples, "sample_rate": SAMPLE_RATE, "fps": fps_q, "gop": gop,
            })

    if workers is None:
        workers = min(os.cpu_count() or 1, 8)
    done = 0
    if workers and len(specs) > 1:
        import multiprocessing as mp

        # fork is fastest where it exists; the workers only run numpy and PyAV.
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_ignore_sigint) as ex:
            try:
                for _ in ex.map(_make_clip, specs, chunksize=8):
                    done += 1
                    if progress:
                        progress(done, len(specs))
            except BaseException:  # interrupted (or a failure): drop the clips not started yet
                ex.shutdown(wait=True, cancel_futures=True)
                raise
    else:
        for spec in specs:
            _make_clip(spec)
            done += 1
            if progress:
                progress(done, len(specs))

    with open(out / "labels.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["index", "mid", "display_name"])
        for d, name in enumerate(DIGIT_NAMES):
            w.writerow([d, f"/avdigits/{d}", name])
    manifests = {}
    for split, plan in plans.items():
        manifests[split] = str(out / f"{split}.csv")
        with open(manifests[split], "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["id", "path", "start", "end", "labels", "condition", "voice", "image"])
            for c in plan:
                w.writerow([c["id"], f"{split}/{c['id']}.mp4", "", "", DIGIT_NAMES[c["digit"]],
                            c["condition"], c["voice"], c["image"]])

    summary = {
        "out_dir": str(out), "labels": str(out / "labels.csv"), "manifests": manifests,
        "params": {"n_train": n_train, "n_val": n_val, "n_test": n_test, "seed": seed, "size": size,
                   "fps": str(fps_q), "num_frames": num_frames, "duration": duration,
                   "sample_rate": SAMPLE_RATE, "conditions": conditions, "gop": gop},
        "counts": {s: condition_counts(sizes[s], conditions) for s in SPLITS},
        "voices": voices, "image_rows": {s: list(SPLIT_ROWS[s]) for s in SPLITS},
    }
    with open(out / "avdigits.json", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    summary["seconds"] = time.perf_counter() - t0
    return summary
