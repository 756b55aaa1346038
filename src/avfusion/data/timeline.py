"""One timeline model of a media file, shared by validate, prepare, the datasets and predict.

A file's streams each cover their own span of the presentation timeline (seconds, as the
container stamps them): real files have audio that runs on after the video (AAC padding, most
downloaded clips), video that outlasts the audio, streams that start at 1 s or 5 s (a clip cut
with ``ffmpeg -ss ... -c copy``, MPEG-TS), VFR video, edit lists. All of that is valid.

- A stream's span comes from the stream itself (its start time and duration), never from the
  container's total; a stream that declares no duration (Matroska / WebM, some TS) has its end
  measured from its last packets.
- The file's *usable span* is where either stream has content: ``[origin, end)`` with ``origin``
  the earliest stream start. Manifest ``start`` / ``end`` count seconds from the origin (what a
  player shows as 0:00), so a row means the same on a file that starts at 5 s.
- A window that runs past one stream's span pads that stream (audio: silence; video: the
  nearest frame held) and says how much: that is expected padding, not an error.
- A stream that stops before its own span says it should (the file ends before its index
  does: truncation), or packets that fail to decode, are *damage*: :func:`judge` reports it,
  and callers decide (validate / prepare / training: an error; predict / eval: a note).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from avfusion.errors import InputError

# How far a stream may stop short of its declared end, or start after its declared start,
# before the gap counts as damage: container timestamps are rounded, AAC / Opus frames are
# 20-64 ms, and the last video frame's duration is a guess.
AUDIO_TOLERANCE = 0.05  # seconds
VIDEO_TOLERANCE_FRAMES = 1.5  # frame durations
# Only an unequal stream end longer than this is worth a note (most clips differ by < 0.5 s).
UNEQUAL_NOTE = 1.0  # seconds
# A stream whose first decoded data comes this much after its declared start has lost its head.
LATE_START = 0.5  # seconds
# Matroska / WebM record the file's duration in their header: measured stream ends this far
# short of it mean the file was cut off.
HEADER_TOLERANCE = 0.2  # seconds
HEADER_DURATION_FORMATS = ("matroska", "webm")
IMAGE_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "webp_pipe", "gif", "bmp_pipe", "tiff_pipe", "image2pipe")


@dataclass(frozen=True)
class Span:
    """[start, end) in seconds on a file's presentation timeline."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start

    def overlap(self, start: float, end: float) -> float:
        return max(0.0, min(end, self.end) - max(start, self.start))


@dataclass
class Timeline:
    """The streams of one media file on its timeline (see the module docstring)."""

    path: str
    video: Span | None = None
    audio: Span | None = None
    fps: float = 0.0  # average frame rate (VFR: frames / duration)
    width: int = 0  # coded size; frames are turned by ``Decoded.rotation`` for display
    height: int = 0
    audio_rate: int = 0
    audio_channels: int = 0
    format: str = ""
    measured: tuple[str, ...] = ()  # streams whose end was measured from their last packets
    header_end: float | None = None  # the end the header records, where the format keeps one there
    cut: dict[str, float] = field(default_factory=dict)  # stream -> where its indexed data runs past the file's end
    ignored: list[str] = field(default_factory=list)  # notes on streams clips do not read (cover art)

    @property
    def has_video(self) -> bool:
        return self.video is not None

    @property
    def has_audio(self) -> bool:
        return self.audio is not None

    @property
    def spans(self) -> dict[str, Span]:
        return {m: s for m, s in (("video", self.video), ("audio", self.audio)) if s is not None}

    @property
    def origin(self) -> float:
        """The earliest stream start: what a player shows as 0:00."""
        return min((s.start for s in self.spans.values()), default=0.0)

    @property
    def end(self) -> float:
        return max((s.end for s in self.spans.values()), default=0.0)

    @property
    def duration(self) -> float:
        """Length of the usable span (where either stream has content)."""
        return self.end - self.origin

    def segment(self, start: float | None, end: float | None) -> Span:
        """A manifest row's segment (seconds from the origin; None = the file's edge) on the
        file's timeline. Raises InputError when it lies outside the usable span."""
        s = self.origin + (start or 0.0)
        e = self.end if end is None else self.origin + end
        if e <= s:
            raise InputError(f"segment end {e - self.origin:.3f} s <= start {s - self.origin:.3f} s")
        if s >= self.end - 1e-3:
            raise InputError(f"segment starts at {s - self.origin:.3f} s, after the file's "
                             f"{self.duration:.3f} s of content")
        return Span(s, e)

    def video_tolerance(self) -> float:
        return VIDEO_TOLERANCE_FRAMES / (self.fps or 25.0)

    def describe(self) -> str:
        parts = [f"{m} {s.start - self.origin:.3f}-{s.end - self.origin:.3f} s" for m, s in self.spans.items()]
        return ", ".join(parts) or "no streams"

    def truncation(self) -> str | None:
        """File-level truncation, found without decoding: the index (mp4 / mov) points past the
        file's end, or the measured stream ends fall short of the header's duration (Matroska)."""
        if self.cut:
            kind, t = min(self.cut.items(), key=lambda kv: kv[1])
            span = self.spans[kind]
            return (f"truncated: the {kind} stops at {t - self.origin:.2f} s but the file says it runs to "
                    f"{span.end - self.origin:.2f} s")
        if self.measured and self.header_end is not None and self.end < self.header_end - HEADER_TOLERANCE:
            return (f"truncated: the data ends at {self.end - self.origin:.2f} s but the file says it runs to "
                    f"{self.header_end - self.origin:.2f} s")
        return None

    def damage(self, verdicts: list["Verdict"]) -> list[str]:
        """The damage of a decoded window: the file-level truncation once, then what decoding
        found that it does not already explain."""
        found = [e for v in verdicts for e in v.errors]
        first = self.truncation()
        if first is None:
            return found
        return [first] + [e for e in found if not e.startswith("truncated")]

    def stream_notes(self) -> list[str]:
        """Facts about the file worth a line: streams not read (cover art), a non-zero start, streams
        of clearly unequal length."""
        notes = list(self.ignored)
        if abs(self.origin) > 1e-3:
            notes.append(f"streams start at {self.origin:.3f} s: manifest times count from there")
        if self.video is not None and self.audio is not None:
            d = self.audio.end - self.video.end
            if abs(d) >= UNEQUAL_NOTE:
                longer, shorter = ("audio", "video") if d > 0 else ("video", "audio")
                held = "the last frame is held" if shorter == "video" else "silence"
                notes.append(f"{longer} runs {abs(d):.2f} s past the end of the {shorter} ({held} there)")
        return notes


@dataclass
class StreamRead:
    """What decoding one stream over a window found (see decode.py).

    ``real``: the requested positions (frames, or audio samples) filled with decoded data.
    ``stop``: where decoding ran out of data (the end of the last decoded frame), when it did
    before the window's end; ``inf`` when the window was decoded to its end.
    ``errors``: packets that failed to decode, and where (seconds) the first did.
    """

    requested: int = 0
    real: int = 0
    stop: float = math.inf
    first: float | None = None  # timestamp of the first decoded frame
    errors: int = 0
    error_at: float | None = None
    error_msg: str = ""


@dataclass
class Verdict:
    """What a decoded window means, per :func:`judge`: damage (``errors``) and expected padding."""

    errors: list[str] = field(default_factory=list)
    padded: dict[str, int] = field(default_factory=dict)  # modality -> padded positions (outside its span)
    missing: dict[str, int] = field(default_factory=dict)  # modality -> positions lost to damage


def judge(tl: Timeline, modality: str, read: StreamRead, window: tuple[float, float],
          positions: np.ndarray | None = None, rate: float | None = None) -> Verdict:
    """Compare what decoding one stream over ``window`` found with the stream's own span.

    ``positions`` (video): the requested frame times; audio: ``rate`` samples per second over
    the window (``read`` then describes this window). Positions outside the stream's span are
    expected padding; positions inside it that were not decoded, beyond the tolerance, are damage
    (truncation or failed packets) and count as ``missing`` (lost), never as padding.
    """
    span = tl.video if modality == "video" else tl.audio
    v = Verdict()
    if span is None:
        return v
    tol = tl.video_tolerance() if modality == "video" else AUDIO_TOLERANCE
    w0, w1 = window
    if positions is not None:
        inside = (positions >= span.start - 1e-3) & (positions < span.end - 1e-3)
        n_inside = int(inside.sum())
        # inside the span but past where decoding stopped / before the first frame, beyond tolerance
        first = read.first if read.first is not None else math.inf
        lost = inside & ((positions >= read.stop + tol) | (positions < first - LATE_START))
        v.padded[modality] = int(len(positions) - n_inside)
        v.missing[modality] = int(lost.sum())
    else:
        assert rate is not None
        n_inside = int(round(span.overlap(w0, w1) * rate))
        lost_s = span.overlap(max(w0, read.stop + tol), w1) if math.isfinite(read.stop) else 0.0
        if read.first is not None:
            lost_s += span.overlap(w0, read.first - LATE_START)
        elif read.requested:
            lost_s = span.overlap(w0, w1)
        v.padded[modality] = max(0, read.requested - n_inside)
        v.missing[modality] = int(round(lost_s * rate))
        if read.errors:  # the holes failed packets left inside the span (filled with silence) are lost, not padding
            v.missing[modality] = max(v.missing[modality], n_inside - read.real)
    rel = tl.origin
    failed = f"{read.errors} {modality} packet(s) failed to decode" if read.errors else ""
    if v.missing[modality] and read.first is None:
        v.errors.append(f"{modality} stream has no decodable data in {max(w0, span.start) - rel:.2f}-"
                        f"{min(w1, span.end) - rel:.2f} s" + (f" ({failed}: {read.error_msg})" if failed else ""))
    elif v.missing[modality] and math.isfinite(read.stop) and read.stop < span.end - tol:
        v.errors.append(f"truncated: the {modality} stops at {read.stop - rel:.2f} s but the file says it runs "
                        f"to {span.end - rel:.2f} s" + (f" ({failed})" if failed else ""))
    elif read.errors:
        at = f" (first at {read.error_at - rel:.2f} s)" if read.error_at is not None else ""
        v.errors.append(f"damaged: {failed}{at}: {read.error_msg}")
    elif v.missing[modality]:
        v.errors.append(f"{modality} starts at {read.first - rel:.2f} s, not at {span.start - rel:.2f} s "
                        "as the file says")
    return v


__all__ = ["Span", "Timeline", "StreamRead", "Verdict", "judge", "IMAGE_FORMATS", "AUDIO_TOLERANCE"]
