"""``judge`` (data/timeline.py), the function that decides damage, case by case on hand-made
timelines: what is expected padding (a window past a stream's span), what is damage (a stream
that stops before its declared end, failed packets, a late first frame), and what is neither."""

from __future__ import annotations

import math

import numpy as np
import pytest

from avfusion.data.timeline import AUDIO_TOLERANCE, LATE_START, Span, StreamRead, Timeline, judge

FPS = 10.0


def _tl(video: tuple[float, float] | None = (0.0, 4.0), audio: tuple[float, float] | None = (0.0, 4.0)) -> Timeline:
    return Timeline(path="x.mp4", video=Span(*video) if video else None, audio=Span(*audio) if audio else None,
                    fps=FPS, audio_rate=16000, audio_channels=1)


def _frames(t0: float, t1: float) -> np.ndarray:
    return np.arange(t0, t1, 1 / FPS)


def _video(tl: Timeline, window: tuple[float, float], read: StreamRead):
    return judge(tl, "video", read, window, positions=_frames(*window))


def _audio(tl: Timeline, window: tuple[float, float], read: StreamRead, rate: float = 100.0):
    return judge(tl, "audio", read, window, rate=rate)


def test_a_clean_window_is_neither_padding_nor_damage() -> None:
    v = _video(_tl(), (1.0, 3.0), StreamRead(requested=20, real=20, first=1.0))
    assert v.errors == [] and v.padded["video"] == 0 and v.missing["video"] == 0
    a = _audio(_tl(), (1.0, 3.0), StreamRead(requested=200, real=200, first=1.0))
    assert a.errors == [] and a.padded["audio"] == 0 and a.missing["audio"] == 0


def test_a_window_past_the_stream_end_is_padding_not_damage() -> None:
    # video 0-2 s, audio 0-4 s (valid: unequal streams); a 1-3 s window pads the video's last second
    tl = _tl(video=(0.0, 2.0))
    v = _video(tl, (1.0, 3.0), StreamRead(requested=20, real=10, stop=2.0, first=1.0))
    assert v.errors == [] and v.padded["video"] == 10 and v.missing["video"] == 0
    a = _audio(_tl(audio=(0.0, 2.0)), (1.0, 3.0), StreamRead(requested=200, real=100, stop=2.0, first=1.0))
    assert a.errors == [] and a.padded["audio"] == 100 and a.missing["audio"] == 0


def test_a_stream_stopping_before_its_declared_end_is_truncation() -> None:
    tl = _tl()
    v = _video(tl, (1.0, 3.0), StreamRead(requested=20, real=5, stop=1.5, first=1.0))
    # lost: the frames past where decoding stopped, beyond the tolerance (1.5 frames)
    assert v.missing["video"] == int(np.sum(_frames(1.0, 3.0) >= 1.5 + tl.video_tolerance())) == 13
    assert v.padded["video"] == 0
    assert len(v.errors) == 1 and v.errors[0].startswith("truncated: the video stops at 1.50 s")
    a = _audio(_tl(), (1.0, 3.0), StreamRead(requested=200, real=50, stop=1.5, first=1.0))
    # 1.5 s + the tolerance to 3 s, at 100 positions per second
    assert a.missing["audio"] == round((3.0 - 1.5 - AUDIO_TOLERANCE) * 100) == 145
    assert "truncated: the audio stops at 1.50 s" in a.errors[0]


def test_stopping_within_the_tolerance_is_not_damage() -> None:
    tol = _tl().video_tolerance()  # 1.5 frames
    v = _video(_tl(), (1.0, 3.0), StreamRead(requested=20, real=19, stop=3.0 - 0.9 * tol, first=1.0))
    assert v.errors == [] and v.missing["video"] == 0
    a = _audio(_tl(), (1.0, 3.0), StreamRead(requested=200, real=197, stop=3.0 - 0.5 * AUDIO_TOLERANCE, first=1.0))
    assert a.errors == [] and a.missing["audio"] == 0


def test_failed_packets_are_damage_even_when_every_position_was_filled() -> None:
    read = StreamRead(requested=20, real=20, first=1.0, errors=3, error_at=2.0, error_msg="Invalid data")
    v = _video(_tl(), (1.0, 3.0), read)
    assert v.missing["video"] == 0
    assert v.errors == ["damaged: 3 video packet(s) failed to decode (first at 2.00 s): Invalid data"]


def test_nothing_decodable_in_the_window() -> None:
    v = _video(_tl(), (1.0, 3.0), StreamRead(requested=20, real=0, stop=1.0, first=None))
    assert v.missing["video"] == 20
    assert v.errors and v.errors[0].startswith("video stream has no decodable data in 1.00-3.00 s")
    a = _audio(_tl(), (1.0, 3.0), StreamRead(requested=200, real=0, first=None))
    assert a.missing["audio"] == 200 and a.errors[0].startswith("audio stream has no decodable data")


def test_a_first_frame_later_than_the_declared_start_is_damage() -> None:
    late = LATE_START + 0.5
    v = _video(_tl(), (0.0, 2.0), StreamRead(requested=20, real=10, first=late))
    assert v.missing["video"] == int(np.sum(_frames(0.0, 2.0) < late - LATE_START))
    assert v.errors == [f"video starts at {late:.2f} s, not at 0.00 s as the file says"]
    # within LATE_START of the declared start: an encoder's usual offset, not damage
    ok = _video(_tl(), (0.0, 2.0), StreamRead(requested=20, real=18, first=LATE_START * 0.5))
    assert ok.errors == [] and ok.missing["video"] == 0


def test_times_are_said_from_the_files_origin() -> None:
    # both streams start at 5 s (a valid non-zero start): messages count from what a player shows as 0:00
    tl = _tl(video=(5.0, 9.0), audio=(5.0, 9.0))
    v = _video(tl, (6.0, 8.0), StreamRead(requested=20, real=5, stop=6.5, first=6.0))
    assert v.errors[0].startswith("truncated: the video stops at 1.50 s but the file says it runs to 4.00 s")


@pytest.mark.parametrize("modality", ["video", "audio"])
def test_an_absent_stream_gets_no_verdict(modality: str) -> None:
    tl = _tl(**{modality: None})
    read = StreamRead(requested=20, real=0, stop=math.inf)
    v = judge(tl, modality, read, (0.0, 2.0), positions=_frames(0.0, 2.0) if modality == "video" else None,
              rate=None if modality == "video" else 100.0)
    assert v.errors == [] and v.padded == {} and v.missing == {}
