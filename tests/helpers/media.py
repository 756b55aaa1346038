"""Synthetic media for the data tests, written with PyAV.

Video frames encode their index: red = 8 * (i % 32), green = 8 * (i // 32), so a test can read
back which source frame the decoder picked. Audio is a 440 Hz sine over faint noise (plus optional clicks).
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def frame_value(i: int) -> tuple[int, int]:
    return 8 * (i % 32), 8 * (i // 32)


def read_index(frame: np.ndarray) -> int:
    """Source frame index from a decoded (H, W, 3) frame (inverse of ``frame_value``)."""
    r, g = frame[..., 0].mean(), frame[..., 1].mean()
    return int(round(r / 8)) + 32 * int(round(g / 8))


def make_media(
    path: str | os.PathLike,
    duration: float = 3.0,
    fps: int = 25,
    size: tuple[int, int] = (160, 120),  # (w, h)
    video: bool = True,
    audio: bool = True,
    rate: int = 44100,
    layout: str = "stereo",
    vcodec: str = "libx264",
    pix_fmt: str = "yuv420p",
    acodec: str = "aac",
    clicks: tuple[float, ...] = (),
    faststart: bool = False,
    audio_duration: float | None = None,  # default: ``duration``
    start: float = 0.0,  # both streams' first timestamp (a clip cut with `ffmpeg -ss ... -c copy`)
    rotation: int | None = None,  # display matrix: turn counter-clockwise by this for display
    vfr: bool = False,  # frame durations alternate 1 and 3 frame periods
    fmt: str | None = None,  # container format (default: from the file name)
    cover_art: bool = False,  # an attached picture (MJPEG) beside the streams, as music files carry
    audio_tracks: int = 1,  # more than 1: the same audio again, as further tracks (a dub, a commentary)
    data_stream: bool = False,  # a data stream (timed metadata) beside the others
    data_codec: str | None = None,
) -> Path:
    path = Path(path)
    c = av.open(str(path), "w", format=fmt, options={"movflags": "faststart"} if faststart else None)
    vs = as_ = None
    pic = _cover_art(c) if cover_art else None
    ds = c.add_data_stream(data_codec) if data_stream else None
    if video:
        vs = c.add_stream(vcodec, rate=fps)
        vs.width, vs.height = size
        vs.pix_fmt = pix_fmt
        if vcodec == "libx264":
            vs.options = {"preset": "ultrafast", "crf": "10", "g": "12"}
        if rotation is not None:
            vs.set_display_rotation(rotation)
        if vfr:
            vs.codec_context.time_base = Fraction(1, 4 * fps)
    tracks = []
    if audio:
        for _ in range(audio_tracks):
            t = c.add_stream(acodec, rate=rate)
            t.layout = layout
            tracks.append(t)
        as_ = tracks[0]
    if pic is not None:  # muxed once every stream is added (the header is written at the first packet)
        for p in pic[1]:
            c.mux(p)
    if vs is not None:
        n = int(round(duration * fps))
        w, h = size
        tick = 0  # in 1 / (4 fps) when vfr
        for i in range(n):
            img = np.zeros((h, w, 3), np.uint8)
            img[..., 0], img[..., 1] = frame_value(i)
            img[..., 2] = 128
            f = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format=pix_fmt)
            if vfr:
                f.pts, f.time_base = int(round(start * 4 * fps)) + tick, Fraction(1, 4 * fps)
                tick += 4 if i % 2 == 0 else 12
            else:
                f.pts = int(round(start * fps)) + i
                f.time_base = Fraction(1, fps)
            for p in vs.encode(f):
                c.mux(p)
        for p in vs.encode(None):
            c.mux(p)
    if as_ is not None:
        n = int(round((duration if audio_duration is None else audio_duration) * rate))
        ch = av.AudioLayout(layout).nb_channels
        t = np.arange(n) / rate
        # a -60 dB noise floor, like real recordings (a bare sine leaves mel bins at the log floor)
        noise = np.random.default_rng(0).normal(0, 1e-3, n)
        x = (0.3 * np.sin(2 * np.pi * 440 * t) + noise).astype(np.float32)
        for ct in clicks:
            k = int(round(ct * rate))
            x[k : k + 8] = 0.9
        data = np.tile(x, (ch, 1))
        fs = as_.codec_context.frame_size or 1024
        for i in range(0, n, fs):
            chunk = np.ascontiguousarray(data[:, i : i + fs])
            if acodec in ("pcm_s16le", "flac"):  # packed int16 frames
                pcm = (chunk.T.reshape(1, -1) * 32767).astype(np.int16)
                fr = av.AudioFrame.from_ndarray(pcm, format="s16", layout=layout)
            else:
                fr = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            fr.sample_rate = rate
            fr.pts = int(round(start * rate)) + i
            for t in tracks:
                for p in t.encode(fr):
                    c.mux(p)
        for t in tracks:
            for p in t.encode(None):
                c.mux(p)
    if ds is not None:
        for k in range(int(duration)):
            pk = av.Packet(b"meta")
            pk.stream, pk.time_base, pk.pts, pk.dts = ds, Fraction(1, 1000), 1000 * k, 1000 * k
            c.mux(pk)
    c.close()
    return path


def _cover_art(c: av.container.OutputContainer) -> tuple[av.stream.Stream, list[av.Packet]]:
    """One MJPEG picture as an attached-picture stream (disposition attached_pic), and its packet."""
    s = c.add_stream("mjpeg", rate=1)
    s.width = s.height = 64
    s.pix_fmt = "yuvj420p"
    s.disposition = av.stream.Disposition.attached_pic
    img = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 200, np.uint8), format="rgb24").reformat(format="yuvj420p")
    packets = [*s.encode(img), *s.encode(None)]
    for p in packets:
        p.pts = p.dts = 0
    return s, packets
