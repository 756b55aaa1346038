"""A hostile-media corpus: files shaped like the ones real corpora are full of, and broken ones,
each with what validate, prepare, training and predict must make of it.

The table in docs/data.md ("What each kind of file gets") is :func:`markdown_table` of
:data:`CASES`; tests/data/test_hostile.py checks every verdict and that the docs table is this one.

Verdict words: validate ``ok`` (no error, no warning) / ``warning: ...`` / ``error: ...``, with the
reason's start; prepare ``written`` / ``failed`` (with validate's reason: one function decides);
training ``sample`` / ``error: ...`` (the row is named, one line); predict ``answer`` /
``answer, note: ...`` / ``error: ...``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from helpers.media import make_media

SMALL = dict(size=(64, 48), fps=25)


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    build: Callable[[Path], Path]
    validate: str
    train: str = "sample"
    predict: str = "answer"
    also: str = ""  # another reason validate must give (its start), of any severity

    @property
    def prepare(self) -> str:
        return "failed" if self.validate.startswith("error") else "written"


def _media(name: str, **kw) -> Callable[[Path], Path]:
    return lambda root: make_media(root / name, **{**SMALL, **kw})


def _cut(fraction: float, faststart: bool) -> Callable[[Path], Path]:
    """A 10 s clip cut off after ``fraction`` of its bytes; the index (moov) first or last."""
    def build(root: Path) -> Path:
        full = make_media(root / f"full_{int(faststart)}.mp4", duration=10.0, faststart=faststart, **SMALL)
        out = root / f"cut{int(fraction * 100)}_{'index_first' if faststart else 'index_last'}.mp4"
        data = full.read_bytes()
        out.write_bytes(data[: int(len(data) * fraction)])
        return out
    return build


def _corrupt(root: Path) -> Path:
    """3000 random bytes written over the middle of a 10 s clip (its index intact)."""
    full = make_media(root / "full_corrupt_src.mp4", duration=10.0, faststart=True, **SMALL)
    b = bytearray(full.read_bytes())
    mid = len(b) // 2
    b[mid : mid + 3000] = np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    out = root / "corrupt_mid.mp4"
    out.write_bytes(bytes(b))
    return out


def _bytes(name: str, data: bytes) -> Callable[[Path], Path]:
    def build(root: Path) -> Path:
        (root / name).write_bytes(data)
        return root / name
    return build


def _png_as_mp4(root: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = root / "image.mp4"
    plt.imsave(str(root / "image.png"), np.random.default_rng(0).random((32, 32, 3)))
    out.write_bytes((root / "image.png").read_bytes())
    return out


def _fifo(root: Path) -> Path:
    """A named pipe with a media name: opening it to read would block until a writer comes."""
    os.mkfifo(root / "fifo.mp4")
    return root / "fifo.mp4"


def _folder(root: Path) -> Path:
    (root / "folder.mp4").mkdir()
    return root / "folder.mp4"


def _not_media(what: str) -> dict[str, str]:
    """The same words from every command (avfusion.data.decode.file_problem)."""
    return dict(validate=f"error: {what}", train=f"error: {what}", predict=f"error: {what}")


CASES: list[Case] = [
    Case("audio_longer_50ms", "audio runs 50 ms past the video (AAC padding)",
         _media("audio_longer_50ms.mp4", duration=3.0, audio_duration=3.05), "ok"),
    Case("audio_longer_400ms", "audio runs 0.4 s past the video (a typical downloaded clip)",
         _media("audio_longer_400ms.mp4", duration=3.0, audio_duration=3.4), "ok"),
    Case("audio_longer_2s", "audio runs 2 s past the video",
         _media("audio_longer_2s.mp4", duration=3.0, audio_duration=5.0), "ok", also="audio runs 2.00 s past"),
    Case("video_longer_400ms", "video runs 0.4 s past the audio",
         _media("video_longer_400ms.mp4", duration=3.4, audio_duration=3.0), "ok"),
    Case("aac_in_mkv", "AAC in Matroska (no per-stream durations), audio 0.4 s longer",
         _media("aac_in_mkv.mkv", duration=3.0, audio_duration=3.4), "ok"),
    Case("start_1s", "both streams start at 1 s (cut with `ffmpeg -ss ... -c copy`)",
         _media("start_1s.mp4", duration=3.0, start=1.0), "ok", also="streams start at"),
    Case("start_5s", "both streams start at 5 s",
         _media("start_5s.mp4", duration=3.0, start=5.0), "ok", also="streams start at"),
    Case("vfr", "variable frame rate (frame durations 40 / 120 ms)",
         _media("vfr.mp4", duration=1.5, audio_duration=3.0, vfr=True), "ok"),
    Case("rotated_90", "phone video: display matrix says turn 90 degrees",
         _media("rotated_90.mp4", duration=2.0, rotation=90), "ok", also="display rotation",
         predict="answer, note: video turned 90 degrees"),
    Case("audio_only", "audio only (.m4a)", _media("audio_only.m4a", duration=2.0, video=False),
         "warning: no video stream", predict="answer, note: audio_only.m4a has no video stream"),
    Case("video_only", "video only", _media("video_only.mp4", duration=2.0, audio=False),
         "warning: no audio stream", predict="answer, note: video_only.mp4 has no audio stream"),
    Case("tiny_1x1", "1x1 pixel frames",
         _media("tiny_1x1.mp4", duration=1.0, size=(1, 1), pix_fmt="yuv444p", audio=False),
         "warning: no audio stream", also="tiny frames", predict="answer, note: tiny_1x1.mp4 has no audio"),
    Case("huge_4000x3000", "4000x3000 frames",
         lambda root: make_media(root / "huge_4000x3000.mp4", duration=1.25, size=(4000, 3000), fps=4), "ok"),
    Case("eight_channel_96k", "8-channel (7.1) 96 kHz FLAC in Matroska",
         _media("eight_channel_96k.mkv", duration=2.0, rate=96000, layout="7.1", acodec="flac"), "ok"),
    Case("unicode_path", "a file name with accents, CJK and a symbol",
         _media("clip é 漢字 ✓.mp4", duration=2.0), "ok"),
    Case("cover_art_m4a", "audio with cover art (.m4a + an attached picture)",
         _media("cover_art.m4a", duration=2.0, video=False, cover_art=True, fmt="mp4"), "warning: no video stream",
         also="cover art ignored", predict="answer, note: cover_art.m4a has no video stream"),
    Case("cover_art_mp3", "MP3 with cover art (an attached picture)",
         _media("cover_art.mp3", duration=2.0, video=False, cover_art=True, acodec="libmp3lame"),
         "warning: no video stream", also="cover art ignored", predict="answer, note: cover_art.mp3 has no video stream"),
    Case("vp9_opus_webm", "VP9 + Opus in WebM", _media("vp9_opus.webm", duration=1.5, vcodec="libvpx-vp9",
                                                         acodec="libopus", rate=48000), "ok"),
    Case("av1", "AV1 (SVT-AV1) + AAC in mp4", _media("av1.mp4", duration=1.5, size=(64, 64), vcodec="libsvtav1"), "ok"),
    Case("mjpeg_pcm_avi", "MJPEG + PCM in AVI", _media("mjpeg_pcm.avi", duration=1.5, vcodec="mjpeg", pix_fmt="yuvj420p",
                                                        acodec="pcm_s16le", rate=16000, layout="mono"), "ok"),
    Case("audio_8k", "8 kHz audio", _media("audio_8k.mp4", duration=2.0, rate=8000), "ok"),
    Case("ten_bit", "10-bit video (yuv420p10le)", _media("ten_bit.mp4", duration=1.5, pix_fmt="yuv420p10le"), "ok"),
    Case("full_range", "full-range video (yuvj420p)", _media("full_range.mp4", duration=1.5, pix_fmt="yuvj420p"), "ok"),
    Case("fps_1", "1 frame per second", _media("fps_1.mp4", duration=3.0, fps=1), "ok"),
    Case("fps_120", "120 frames per second", _media("fps_120.mp4", duration=1.5, fps=120), "ok"),
    Case("two_audio_tracks", "two audio tracks", _media("two_audio.mp4", duration=2.0, audio_tracks=2), "ok",
         also="2 audio tracks: the first is read"),
    Case("data_stream", "a data stream (KLV) beside video and audio, in MPEG-TS",
         _media("data_stream.ts", duration=2.0, data_stream=True, data_codec="klv"), "ok"),
    Case("fifo", "a FIFO (named pipe) named .mp4", _fifo, **_not_media("not a regular file: a FIFO")),
    Case("device", "a device (/dev/null)", lambda root: Path("/dev/null"), **_not_media("not a regular file: a device")),
    Case("folder", "a folder named .mp4", _folder, **_not_media("not a regular file: a folder")),
    Case("zero_bytes", "an empty file", _bytes("zero_bytes.mp4", b""), "error: empty file",
         train="error: empty file", predict="error: empty file"),
    Case("random_bytes", "20 kB of random bytes",
         _bytes("random_bytes.mp4", np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes()),
         "error: cannot open", train="error: cannot open", predict="error: cannot open"),
    Case("image_as_mp4", "a PNG image renamed .mp4", _png_as_mp4, "error: a still image",
         train="error: a still image", predict="error: a still image"),
    *[Case(f"cut{int(f * 100)}_index_first", f"cut off at {int(f * 100)}% of its bytes, index (moov) first",
           _cut(f, True), "error: truncated", train="error: truncated", predict="answer, note: truncated")
      for f in (0.1, 0.5, 0.9)],
    *[Case(f"cut{int(f * 100)}_index_last", f"cut off at {int(f * 100)}% of its bytes, index (moov) last",
           _cut(f, False), "error: cannot open", train="error: cannot open", predict="error: cannot open")
      for f in (0.1, 0.5, 0.9)],
    Case("corrupt_mid", "3 kB of garbage over the middle (index intact)", _corrupt, "error: damaged",
         train="error: damaged", predict="answer, note: damaged"),
]

# Training and predict cut clips from part of a file: for damage in the middle of the file the
# verdict holds when a clip reaches it (the tests read the whole file with many clips).
REACHES_DAMAGE = {"corrupt_mid"}


def markdown_table() -> str:
    rows = ["| file | validate | prepare | training | predict |", "|---|---|---|---|---|"]
    for c in CASES:
        v = c.validate + (f" (also: {c.also})" if c.also else "")
        tail = " (when a clip reaches the damage)" if c.name in REACHES_DAMAGE else ""
        rows.append(f"| {c.what} | {v} | {c.prepare} | {c.train}{tail} | {c.predict}{tail} |")
    return "\n".join(rows)
