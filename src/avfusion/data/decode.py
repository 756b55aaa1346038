"""Decoding with PyAV: frames on a target-fps grid and 16 kHz mono audio, on the file's timeline.

Timeline rules (docs/data.md):
- times are seconds on the container's presentation timeline (a stream that starts at 0.04 s has
  its first frame at 0.04);
- video frame for time t: the last decoded frame whose timestamp is <= t (+ 1 ms slack), i.e. what
  a player shows at t; times before the first frame take the first frame;
- audio: every channel layout and rate is down-mixed / resampled by libswresample to mono float at
  ``sample_rate``; samples are placed by their timestamps, so the AAC encoder delay (priming,
  negative timestamps / skip-samples removed by FFmpeg through the mp4 edit list) is never
  counted, and samples past the stream's declared end (the last frame's padding) are cut;
- padding: a window that runs past the available data is padded, audio with zeros (silence),
  video by repeating the nearest real frame; ``Decoded.video_valid`` / ``audio_valid`` say how
  much is real.
- a missing stream is reported as absent (``has_video`` / ``has_audio`` False, array None); a
  stream that exists but cannot be decoded raises :class:`DecodeError`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from avfusion.errors import InputError

_SLACK = 1e-3  # seconds: timestamps are rounded in their time base


class DecodeError(InputError, RuntimeError):
    """A file (or a stream in it) that cannot be decoded; the message names the file."""


@dataclass
class MediaInfo:
    path: str
    duration: float  # seconds, container (max over streams)
    has_video: bool
    has_audio: bool
    video_start: float = 0.0
    video_duration: float = 0.0
    fps: float = 0.0
    width: int = 0
    height: int = 0
    audio_start: float = 0.0
    audio_duration: float = 0.0
    audio_rate: int = 0
    audio_channels: int = 0


@dataclass
class Decoded:
    """One decoded window. ``video`` (T, H, W, 3) uint8 on the grid ``t0 + k / fps``;
    ``audio`` (N,) float32 mono starting at ``audio_t0``."""

    video: np.ndarray | None
    audio: np.ndarray | None
    has_video: bool
    has_audio: bool
    t0: float = 0.0
    fps: float = 0.0
    audio_t0: float = 0.0
    sample_rate: int = 16000
    video_valid: int = 0  # frames that are real (not repeated padding)
    audio_valid: int = 0  # samples that are real (not zero padding)
    audio_range: tuple[int, int] = (0, 0)  # [first, last) real sample of ``audio``
    info: MediaInfo | None = None
    notes: list[str] = field(default_factory=list)


def _stream_span(stream: av.stream.Stream) -> tuple[float, float]:
    tb = float(stream.time_base) if stream.time_base else 0.0
    start = stream.start_time * tb if stream.start_time is not None else 0.0
    dur = stream.duration * tb if stream.duration else 0.0
    return start, dur


def open_container(path: str | os.PathLike) -> av.container.InputContainer:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DecodeError(f"{path}: file not found")
    if os.path.getsize(path) == 0:
        raise DecodeError(f"{path}: empty file (0 bytes)")
    try:
        return av.open(path, metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError) as e:
        raise DecodeError(f"{path}: cannot open: {e}") from e


def probe_container(c: av.container.InputContainer, path: str = "") -> MediaInfo:
    vs = c.streams.video[0] if c.streams.video else None
    aus = c.streams.audio[0] if c.streams.audio else None
    info = MediaInfo(path=path, duration=0.0, has_video=vs is not None, has_audio=aus is not None)
    if vs is not None:
        info.video_start, info.video_duration = _stream_span(vs)
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate
        info.fps = float(rate) if rate else 0.0
        info.width, info.height = vs.codec_context.width, vs.codec_context.height
        if not info.video_duration and vs.frames and info.fps:
            info.video_duration = vs.frames / info.fps
    if aus is not None:
        info.audio_start, info.audio_duration = _stream_span(aus)
        info.audio_rate = aus.codec_context.sample_rate or aus.rate or 0
        info.audio_channels = aus.codec_context.channels or 0
    container = c.duration / 1e6 if c.duration else 0.0
    info.duration = max(
        container, info.video_start + info.video_duration, info.audio_start + info.audio_duration
    )
    return info


def probe(path: str | os.PathLike) -> MediaInfo:
    with open_container(path) as c:
        return probe_container(c, os.fspath(path))


def _seek(c: av.container.InputContainer, stream: av.stream.Stream, t: float) -> None:
    # Seek to the keyframe before t; near the start just decode from the beginning.
    if t > 0.5:
        try:
            c.seek(int(max(t - 0.1, 0) / float(stream.time_base)), stream=stream, backward=True, any_frame=False)
        except av.FFmpegError:
            pass  # unseekable input: decoding from the current (start) position is still correct


class _ToRGB:
    """Frame -> RGB (H, W, 3) uint8, short side resized, through one cached swscale context
    (``frame.reformat`` builds a new context per frame: 5x slower with area filtering)."""

    def __init__(self, short_side: int | None) -> None:
        self.short_side = short_side
        self.reformatter = VideoReformatter()
        self._last_frame: av.VideoFrame | None = None
        self._last = np.zeros(0, np.uint8)

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        w, h = frame.width, frame.height
        if self.short_side and min(w, h) != self.short_side:
            s = self.short_side / min(w, h)
            w, h = max(1, round(w * s)), max(1, round(h * s))
        # resize (area averaging when shrinking) and RGB conversion in one swscale pass
        if frame is self._last_frame:  # several target times on one source frame
            return self._last
        out = self.reformatter.reformat(frame, width=w, height=h, format="rgb24", interpolation="AREA")
        self._last_frame, self._last = frame, out.to_ndarray()
        return self._last


def decode_video(
    c: av.container.InputContainer,
    times: np.ndarray,
    short_side: int | None = None,
    info: MediaInfo | None = None,
    threads: int = 0,
) -> tuple[np.ndarray, int]:
    """Frames shown at ``times`` (sorted seconds): (T, H, W, 3) uint8, and how many are real.

    Times past the last frame repeat the last frame (counted as padding)."""
    vs = c.streams.video[0]
    if threads:
        vs.thread_type = "AUTO"
        vs.codec_context.thread_count = threads
    times = np.asarray(times, dtype=np.float64)
    out: list[np.ndarray | None] = [None] * len(times)
    to_rgb = _ToRGB(short_side)
    _seek(c, vs, float(times[0]))
    prev: av.VideoFrame | None = None
    prev_t = -math.inf
    k = 0
    before = 0  # times before the first frame: shown with the first frame, counted as padding
    try:
        for frame in c.decode(vs):
            ft = frame.time if frame.time is not None else prev_t + 1e-6
            # every target time before this frame's timestamp is shown by the previous frame
            while k < len(times) and times[k] + _SLACK < ft:
                if prev is None:  # before the first frame: show the first frame
                    before += 1
                    out[k] = to_rgb(frame)
                    k += 1
                    continue
                out[k] = to_rgb(prev)
                k += 1
            if k >= len(times):
                break
            prev, prev_t = frame, ft
    except av.FFmpegError as e:
        if prev is None:
            raise DecodeError(f"{c.name}: video decoding failed: {e}") from e
        # A truncated tail: keep what decoded, the rest is padding below.
    if prev is None:
        raise DecodeError(f"{c.name}: no video frame could be decoded")
    # Times at or after the last decoded frame: it stays on screen for one frame duration
    # (real), later times are padding (the stream ended, or the file is truncated).
    frame_dur = 1.0 / info.fps if info is not None and info.fps else 0.04
    valid = k - before
    last = None
    while k < len(times):
        if last is None:
            last = to_rgb(prev)
        out[k] = last
        if times[k] < prev_t + frame_dur - _SLACK:
            valid += 1
        k += 1
    return np.stack(out), valid  # type: ignore[arg-type]


def decode_audio(
    c: av.container.InputContainer,
    t0: float,
    t1: float,
    sample_rate: int = 16000,
    info: MediaInfo | None = None,
) -> tuple[np.ndarray, tuple[int, int]]:
    """Mono float32 samples for [t0, t1) at ``sample_rate``; zero-padded where no audio exists.

    Returns (waveform of round((t1 - t0) * sample_rate) samples, [first, last) real sample)."""
    aus = c.streams.audio[0]
    n_out = int(round((t1 - t0) * sample_rate))
    start, dur = _stream_span(aus)
    # Formats without a stream duration (e.g. some mkv / webm) fall back to the container's.
    stream_end = start + dur if dur else (info.duration if info is not None and info.duration else math.inf)
    _seek(c, aus, t0)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    chunks: list[np.ndarray] = []
    first_t: float | None = None
    try:
        for frame in c.decode(aus):
            if frame.time is None:
                continue
            if first_t is None:
                first_t = frame.time  # the resampler's output starts at its first input's time
            for o in resampler.resample(frame):
                chunks.append(o.to_ndarray().reshape(-1))
            if frame.time > t1 + 0.1:
                break
        for o in resampler.resample(None):
            chunks.append(o.to_ndarray().reshape(-1))
    except av.FFmpegError as e:
        if not chunks:
            raise DecodeError(f"{c.name}: audio decoding failed: {e}") from e
    if first_t is None:
        raise DecodeError(f"{c.name}: no audio frame could be decoded")
    wav = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    # Cut the encoder's end padding: nothing after the stream's declared end.
    if math.isfinite(stream_end):
        wav = wav[: max(0, int(round((stream_end - first_t) * sample_rate)))]
    out = np.zeros(n_out, dtype=np.float32)
    off = int(round((t0 - first_t) * sample_rate))  # index in wav of out[0]
    src0, dst0 = max(off, 0), max(-off, 0)
    n = max(0, min(len(wav) - src0, n_out - dst0))
    out[dst0 : dst0 + n] = wav[src0 : src0 + n]
    return out, (dst0, dst0 + n)


def decode(
    path: str | os.PathLike,
    video_times: np.ndarray | None,
    audio_span: tuple[float, float] | None,
    fps: float = 25.0,
    sample_rate: int = 16000,
    short_side: int | None = None,
    threads: int = 0,
) -> Decoded:
    """Decode the frames shown at ``video_times`` (sorted seconds) and the audio of
    ``audio_span``. None skips that modality; a missing stream marks it absent."""
    with open_container(path) as c:
        info = probe_container(c, os.fspath(path))
        if not info.has_video and not info.has_audio:
            raise DecodeError(f"{path}: no audio or video stream")
        d = Decoded(None, None, has_video=info.has_video, has_audio=info.has_audio, fps=fps,
                    sample_rate=sample_rate, info=info)
        if video_times is not None and len(video_times) and info.has_video:
            d.video, d.video_valid = decode_video(c, np.asarray(video_times), short_side, info, threads)
            d.t0 = float(video_times[0])
    if audio_span is not None and info.has_audio:
        # A fresh demuxer: cheaper and more robust than seeking back (some formats cannot).
        with open_container(path) as c:
            d.audio, d.audio_range = decode_audio(c, audio_span[0], audio_span[1], sample_rate, info)
            d.audio_valid = d.audio_range[1] - d.audio_range[0]
            d.audio_t0 = audio_span[0]
    return d


def grid_times(t0: float, t1: float, fps: float) -> np.ndarray:
    """The frame grid t0 + k / fps covering [t0, t1)."""
    return t0 + np.arange(max(1, int(round((t1 - t0) * fps)))) / fps
