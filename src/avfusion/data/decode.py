"""Decoding with PyAV: frames on a target-fps grid and 16 kHz mono audio, on the file's timeline.

Timeline rules (avfusion.data.timeline, docs/data.md):
- times are seconds on the container's presentation timeline; each stream has its own span
  (a stream that starts at 5 s has its first frame at 5 s);
- video frame for time t: the last decoded frame whose timestamp is <= t (+ 1 ms slack), i.e. what
  a player shows at t; times before the first frame show the first frame (padding); frames are
  turned upright by their display matrix (phone videos) and stretched to square pixels;
- audio: every channel layout and rate is down-mixed / resampled by libswresample to mono float at
  ``sample_rate``; samples are placed by their timestamps, so the AAC encoder delay (priming,
  removed by FFmpeg through the mp4 edit list) is never counted, a gap in the timestamps (or a
  packet that fails to decode) becomes silence at its place instead of shifting what follows,
  and samples past the stream's end (the last frame's padding) are cut;
- padding: a window that runs past the available data is padded, audio with zeros (silence),
  video by holding the nearest real frame; ``Decoded`` says how much is real, and
  ``Decoded.video_read`` / ``audio_read`` where decoding stopped and which packets failed, which
  :func:`avfusion.data.timeline.judge` turns into expected padding vs damage;
- a missing stream is reported as absent (``has_video`` / ``has_audio`` False, array None); a
  file that cannot be opened, or holds neither stream, raises :class:`DecodeError`.
"""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Iterator

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from avfusion.data.timeline import HEADER_DURATION_FORMATS, IMAGE_FORMATS, Span, StreamRead, Timeline
from avfusion.errors import InputError

_SLACK = 1e-3  # seconds: timestamps are rounded in their time base
_AUDIO_GAP = 0.01  # seconds: a jump in audio timestamps larger than this is filled with silence


class DecodeError(InputError, RuntimeError):
    """A file (or a stream in it) that cannot be decoded; the message names the file."""


@dataclass
class Decoded:
    """One decoded window. ``video`` (T, H, W, 3) uint8 at the requested times;
    ``audio`` (N,) float32 mono starting at ``audio_t0``."""

    video: np.ndarray | None
    audio: np.ndarray | None
    has_video: bool
    has_audio: bool
    t0: float = 0.0
    fps: float = 0.0
    audio_t0: float = 0.0
    sample_rate: int = 16000
    video_real: np.ndarray | None = None  # (T,) bool: frame k is a decoded frame shown at its time
    audio_real: np.ndarray | None = None  # (N,) bool: decoded samples (padding and filled gaps False)
    video_read: StreamRead = field(default_factory=StreamRead)
    audio_read: StreamRead = field(default_factory=StreamRead)
    rotation: int = 0  # degrees the frames were turned counter-clockwise for display
    timeline: Timeline | None = None

    @property
    def video_valid(self) -> int:
        return 0 if self.video_real is None else int(self.video_real.sum())

    @property
    def audio_valid(self) -> int:
        return 0 if self.audio_real is None else int(self.audio_real.sum())

    @property
    def audio_range(self) -> tuple[int, int]:
        """[first, last) decoded sample of ``audio``."""
        idx = np.flatnonzero(self.audio_real) if self.audio_real is not None else np.zeros(0, int)
        return (int(idx[0]), int(idx[-1]) + 1) if len(idx) else (0, 0)


# -- opening and the timeline ----------------------------------------------------------------


def file_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be opened as a media file, in the words every command uses (validate,
    prepare, training, eval, predict); None for a regular file with content. A FIFO or a device
    is refused before it is opened: reading one would block or never end."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "file not found"
    except OSError as e:  # permissions, a name too long, ...
        return f"cannot read: {e.strerror or e}"
    if not stat.S_ISREG(st.st_mode):
        kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "a socket")
        return f"not a regular file: {kind}"
    if st.st_size == 0:
        return "empty file (0 bytes)"
    return None


def open_container(path: str | os.PathLike) -> av.container.InputContainer:
    path = os.fspath(path)
    problem = file_problem(path)
    if problem is not None:
        raise DecodeError(f"{path}: {problem}")
    try:
        return av.open(path, metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError) as e:
        raise DecodeError(f"{path}: cannot open ({_reason(e)}): not a media file, or cut off before its "
                          "index") from e
    except OSError as e:  # unreadable (permissions, I/O error)
        raise DecodeError(f"{path}: cannot read: {e.strerror or e}") from e


def _reason(e: Exception) -> str:
    """FFmpeg's reason without the repeated file name."""
    if isinstance(e, av.FFmpegError) and e.strerror:
        return e.strerror
    return str(e)


# AV_DISPOSITION_ATTACHED_PIC: a picture stored as a one-packet video stream (the cover art of an
# m4a / mp3, a thumbnail), not a moving picture.
ATTACHED_PIC = 0x0400


def video_stream(c: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    """The video stream clips read: the first one that is not an attached picture. Everything that
    reads a file's video (the timeline, decoding, measuring ends) chooses it here, so they agree."""
    return next((s for s in c.streams.video if not int(s.disposition) & ATTACHED_PIC), None)


def audio_stream(c: av.container.InputContainer) -> av.audio.stream.AudioStream | None:
    """The audio stream clips read: the first one (a second track, another language or a
    commentary, is not mixed in)."""
    return c.streams.audio[0] if c.streams.audio else None


def ignored_streams(c: av.container.InputContainer) -> list[str]:
    """Notes on the streams clips do not read, worth a line: cover art (never video), audio tracks
    after the first."""
    notes = []
    if any(int(s.disposition) & ATTACHED_PIC for s in c.streams.video):
        notes.append("cover art ignored (an attached picture, not a video stream)")
    if len(c.streams.audio) > 1:
        notes.append(f"{len(c.streams.audio)} audio tracks: the first is read")
    return notes


def read_timeline(c: av.container.InputContainer, path: str = "") -> Timeline:
    """Each stream's span from the stream itself; ends the container does not declare are measured."""
    path = path or c.name
    fmt = c.format.name if c.format is not None else ""
    if fmt in IMAGE_FORMATS or fmt.endswith("_pipe"):
        raise DecodeError(f"{path}: a still image ({fmt}), not a video")
    vs, aus = video_stream(c), audio_stream(c)
    tl = Timeline(path=path, format=fmt, ignored=ignored_streams(c))
    c_start = c.start_time / 1e6 if c.start_time is not None else 0.0
    c_end = c_start + c.duration / 1e6 if c.duration else None
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    for kind, s in (("video", vs), ("audio", aus)):
        if s is None:
            continue
        tb = float(s.time_base) if s.time_base else 0.0
        starts[kind] = s.start_time * tb if s.start_time is not None else c_start
        if s.duration and tb:
            ends[kind] = starts[kind] + s.duration * tb
    if vs is not None:
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate
        tl.fps = float(rate) if rate else 0.0
        tl.width, tl.height = vs.codec_context.width, vs.codec_context.height
    if aus is not None:
        tl.audio_rate = aus.codec_context.sample_rate or aus.rate or 0
        tl.audio_channels = aus.codec_context.channels or 0
    unknown = [k for k in starts if k not in ends]
    if unknown:
        ends.update(_measure_ends(path, unknown, c_end))
        tl.measured = tuple(unknown)
        if c_end is not None and any(f in fmt.split(",") for f in HEADER_DURATION_FORMATS):
            tl.header_end = c_end
    size = os.path.getsize(path) if os.path.isfile(path) else None
    for kind, s in (("video", vs), ("audio", aus)):
        cut = _index_cut(s, size) if s is not None and size is not None else None
        if cut is not None:
            tl.cut[kind] = cut
    for kind in starts:
        end = ends.get(kind)
        if end is None or end <= starts[kind]:
            if kind == "video" and end is None:
                raise DecodeError(f"{path}: the video stream holds no packets")
            end = starts[kind] + (1.0 / tl.fps if kind == "video" and tl.fps else 0.0)
        setattr(tl, kind, Span(starts[kind], end))
    return tl


def _index_cut(stream: av.stream.Stream, file_size: int) -> float | None:
    """Where a stream's indexed data (mp4 / mov sample tables) first runs past the end of the
    file, in seconds: the file was cut off after its index was written. None when it all fits
    (or the format keeps no such index: Matroska cues have no sizes)."""
    try:
        entries = stream.index_entries
        n = len(entries)
    except (AttributeError, av.FFmpegError):  # PyAV < 13
        return None
    if not n or stream.time_base is None:
        return None
    last = entries[n - 1]
    if last.size <= 0 or last.pos < 0 or last.pos + last.size <= file_size:
        return None
    lo, hi = 0, n - 1  # the first entry that does not fit (entries are stored in file order)
    while lo < hi:
        mid = (lo + hi) // 2
        e = entries[mid]
        if e.pos + e.size > file_size:
            hi = mid
        else:
            lo = mid + 1
    return float(entries[lo].timestamp * stream.time_base)


def _measure_ends(path: str, kinds: list[str], container_end: float | None) -> dict[str, float]:
    """End (last packet's pts + duration) of streams whose container declares no duration
    (Matroska / WebM, TS): demux the last seconds, or the whole file if a stream is not found there."""
    ends: dict[str, float] = {}
    for from_tail in (True, False):
        if not from_tail and all(k in ends for k in kinds):
            break
        with av.open(path, metadata_errors="ignore") as c:
            streams = [video_stream(c) if k == "video" else audio_stream(c) for k in kinds]
            if from_tail:
                if container_end is None:
                    continue
                try:
                    c.seek(int(max(0.0, container_end - 10.0) * 1e6), backward=True)
                except av.FFmpegError:
                    continue
            try:
                for pk in c.demux(*streams):
                    if pk.pts is None or pk.time_base is None:
                        continue
                    kind = pk.stream.type
                    dur = pk.duration or 0
                    t = float((pk.pts + dur) * pk.time_base)
                    if not dur and kind == "video":
                        rate = pk.stream.average_rate or pk.stream.guessed_rate
                        t += 1.0 / float(rate) if rate else 0.04
                    ends[kind] = max(ends.get(kind, -math.inf), t)
            except av.FFmpegError:
                pass  # a damaged tail: the packets read so far say where the data ends
    return ends


def probe(path: str | os.PathLike) -> Timeline:
    with open_container(path) as c:
        return read_timeline(c, os.fspath(path))


def _seek(c: av.container.InputContainer, stream: av.stream.Stream, t: float, start: float) -> None:
    # Seek to the keyframe before t; near the stream's start just decode from the beginning.
    if t - start > 0.5:
        try:
            c.seek(int((t - 0.1) / float(stream.time_base)), stream=stream, backward=True, any_frame=False)
        except av.FFmpegError:
            pass  # unseekable input: decoding from the current (start) position is still correct


def _frames(c: av.container.InputContainer, stream: av.stream.Stream, read: StreamRead) -> Iterator[av.frame.Frame]:
    """Decoded frames, packet by packet: a packet that fails to decode is counted in ``read`` and
    skipped (the stream goes on); a container that cannot be read further ends the stream."""
    tb = stream.time_base
    try:
        for packet in c.demux(stream):
            try:
                frames = packet.decode()
            except av.FFmpegError as e:
                read.errors += 1
                if read.error_at is None and packet.pts is not None and tb is not None:
                    read.error_at = float(packet.pts * tb)
                read.error_msg = read.error_msg or _reason(e)
                continue
            yield from frames
    except av.FFmpegError:
        return  # damaged or cut-off container: what decoded so far is all there is


# -- video ----------------------------------------------------------------------------------


def _rotation(frame: av.VideoFrame) -> int:
    """Counter-clockwise display rotation of a frame in quarter turns' degrees (0, 90, 180, 270)."""
    try:
        r = frame.rotation
    except (AttributeError, ValueError):  # no display matrix
        return 0
    return int(round((r or 0) / 90.0)) % 4 * 90


class _ToRGB:
    """Frame -> RGB (H, W, 3) uint8 as displayed: square pixels, upright, short side resized, in one
    cached swscale pass (``frame.reformat`` builds a new context per frame: 5x slower with area
    filtering) and a lossless quarter turn."""

    def __init__(self, short_side: int | None, sar: Fraction | None = None) -> None:
        self.short_side = short_side
        self.sar = sar if sar and sar > 0 and sar != 1 else None
        self.reformatter = VideoReformatter()
        self._last_frame: av.VideoFrame | None = None
        self._last = np.zeros(0, np.uint8)

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        if frame is self._last_frame:  # several target times on one source frame
            return self._last
        rot = _rotation(frame)
        w, h = frame.width, frame.height
        if self.sar is not None:  # anamorphic: stretch to the display aspect
            w = max(1, round(w * float(self.sar)))
        dw, dh = (h, w) if rot in (90, 270) else (w, h)  # displayed size
        if self.short_side and min(dw, dh) != self.short_side:
            s = self.short_side / min(dw, dh)
            w, h = max(1, round(w * s)), max(1, round(h * s))
        # resize (area averaging when shrinking) and RGB conversion in one swscale pass
        out = self.reformatter.reformat(frame, width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray()
        if rot:
            out = np.ascontiguousarray(np.rot90(out, k=rot // 90))  # np.rot90 turns counter-clockwise
        self._last_frame, self._last = frame, out
        return out


def decode_video(
    c: av.container.InputContainer,
    times: np.ndarray,
    short_side: int | None = None,
    timeline: Timeline | None = None,
    threads: int = 0,
    collect: bool = True,
) -> tuple[np.ndarray | None, np.ndarray, StreamRead, int]:
    """Frames shown at ``times`` (sorted seconds).

    Returns (frames (T, H, W, 3) uint8, or None when ``collect`` is False or no frame decoded;
    real (T,) bool; what decoding found; the display rotation applied)."""
    vs = video_stream(c)
    assert vs is not None, "decode_video on a file without a video stream (see Timeline.has_video)"
    if threads:
        vs.thread_type = "AUTO"
        vs.codec_context.thread_count = threads
    times = np.asarray(times, dtype=np.float64)
    T = len(times)
    read = StreamRead(requested=T)
    real = np.zeros(T, dtype=bool)
    out: list[np.ndarray | None] = [None] * T
    to_rgb = _ToRGB(short_side, vs.codec_context.sample_aspect_ratio) if collect else None
    start = timeline.video.start if timeline is not None and timeline.video is not None else 0.0
    fps = timeline.fps if timeline is not None and timeline.fps else 25.0
    _seek(c, vs, float(times[0]), start)
    prev: av.VideoFrame | None = None
    prev_t = -math.inf
    k = 0
    rotation = 0
    ran_out = True
    for frame in _frames(c, vs, read):
        ft = frame.time if frame.time is not None else prev_t + 1e-6
        if read.first is None:
            read.first, rotation = ft, _rotation(frame)
        # every target time before this frame's timestamp is shown by the previous frame
        while k < T and times[k] + _SLACK < ft:
            shown = prev if prev is not None else frame  # before the first frame: padding
            real[k] = prev is not None
            if to_rgb is not None:
                out[k] = to_rgb(shown)
            k += 1
        if k >= T:
            ran_out = False
            break
        prev, prev_t = frame, ft
    if ran_out:
        read.stop = prev_t + 1.0 / fps if prev is not None else -math.inf
    # Times at or after the last decoded frame: it stays on screen for one frame duration
    # (real); later times are padding (the stream ended) or lost (truncation: judge() tells).
    while k < T and prev is not None:
        real[k] = times[k] < prev_t + 1.0 / fps - _SLACK
        if to_rgb is not None:
            out[k] = to_rgb(prev)
        k += 1
    frames = np.stack(out) if to_rgb is not None and read.first is not None else None  # type: ignore[arg-type]
    return frames, real, read, rotation


# -- audio ----------------------------------------------------------------------------------


def _silence(like: av.AudioFrame, samples: int) -> av.AudioFrame:
    f = av.AudioFrame(format=like.format.name, layout=like.layout.name, samples=samples)
    for p in f.planes:
        p.update(bytes(p.buffer_size))
    f.sample_rate = like.sample_rate
    return f


def decode_audio(
    c: av.container.InputContainer,
    t0: float,
    t1: float,
    sample_rate: int = 16000,
    timeline: Timeline | None = None,
) -> tuple[np.ndarray, np.ndarray, StreamRead]:
    """Mono float32 samples for [t0, t1) at ``sample_rate``; zero-padded where no audio exists.

    Returns (waveform of round((t1 - t0) * sample_rate) samples, real (same length, bool: decoded
    samples; padding and the silence filled into gaps are False), what decoding found)."""
    aus = audio_stream(c)
    assert aus is not None, "decode_audio on a file without an audio stream (see Timeline.has_audio)"
    n_out = int(round((t1 - t0) * sample_rate))
    span = timeline.audio if timeline is not None else None
    stream_end = span.end if span is not None else math.inf
    read = StreamRead(requested=n_out)
    _seek(c, aus, t0, span.start if span is not None else 0.0)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    chunks: list[np.ndarray] = []
    gaps: list[tuple[int, int]] = []  # [a, b) in resampled samples from the first frame: silence we filled
    next_t = -math.inf
    ran_out = True
    for frame in _frames(c, aus, read):
        if frame.time is None:
            continue
        if read.first is None:
            read.first = frame.time  # the resampler's output starts at its first input's time
        elif frame.time > next_t + _AUDIO_GAP:  # a hole in the timeline (or a lost packet)
            n = int(round((frame.time - next_t) * frame.sample_rate))
            gaps.append((int(round((next_t - read.first) * sample_rate)),
                         int(round((frame.time - read.first) * sample_rate))))
            for o in resampler.resample(_silence(frame, n)):
                chunks.append(o.to_ndarray().reshape(-1))
        for o in resampler.resample(frame):
            chunks.append(o.to_ndarray().reshape(-1))
        next_t = frame.time + frame.samples / frame.sample_rate
        if frame.time > t1 + 0.1:
            ran_out = False
            break
    for o in resampler.resample(None):
        chunks.append(o.to_ndarray().reshape(-1))
    if ran_out:
        read.stop = min(next_t, stream_end) if read.first is not None else -math.inf
    out = np.zeros(n_out, dtype=np.float32)
    real = np.zeros(n_out, dtype=bool)
    if read.first is None:
        return out, real, read
    wav = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    # Cut the encoder's end padding: nothing after the stream's end.
    if math.isfinite(stream_end):
        wav = wav[: max(0, int(round((stream_end - read.first) * sample_rate)))]
    off = int(round((t0 - read.first) * sample_rate))  # index in wav of out[0]
    src0, dst0 = max(off, 0), max(-off, 0)
    n = max(0, min(len(wav) - src0, n_out - dst0))
    out[dst0 : dst0 + n] = wav[src0 : src0 + n]
    real[dst0 : dst0 + n] = True
    for a, b in gaps:  # gap positions in wav -> in out
        real[max(0, a - off) : max(0, b - off)] = False
    read.real = int(real.sum())
    return out, real, read


# -- both -----------------------------------------------------------------------------------


def decode(
    path: str | os.PathLike,
    video_times: np.ndarray | None,
    audio_span: tuple[float, float] | None,
    fps: float = 25.0,
    sample_rate: int = 16000,
    short_side: int | None = None,
    threads: int = 0,
    timeline: Timeline | None = None,
    collect: bool = True,
) -> Decoded:
    """Decode the frames shown at ``video_times`` (sorted seconds) and the audio of
    ``audio_span``. None skips that modality; a missing stream marks it absent. ``collect=False``
    only checks (nothing is converted or kept: validation of long files)."""
    with open_container(path) as c:
        tl = timeline or read_timeline(c, os.fspath(path))
        if not tl.has_video and not tl.has_audio:
            raise DecodeError(f"{path}: no audio or video stream")
        d = Decoded(None, None, has_video=tl.has_video, has_audio=tl.has_audio, fps=fps,
                    sample_rate=sample_rate, timeline=tl)
        if video_times is not None and len(video_times) and tl.has_video:
            d.video, d.video_real, d.video_read, d.rotation = decode_video(
                c, np.asarray(video_times), short_side, tl, threads, collect)
            d.t0 = float(video_times[0])
    if audio_span is not None and tl.has_audio:
        # A fresh demuxer: cheaper and more robust than seeking back (some formats cannot).
        with open_container(path) as c:
            wav, d.audio_real, d.audio_read = decode_audio(c, audio_span[0], audio_span[1], sample_rate, tl)
            d.audio = wav if collect and d.audio_read.first is not None else None
            d.audio_t0 = audio_span[0]
    return d


def grid_times(t0: float, t1: float, fps: float) -> np.ndarray:
    """The frame grid t0 + k / fps covering [t0, t1)."""
    return t0 + np.arange(max(1, int(round((t1 - t0) * fps)))) / fps
