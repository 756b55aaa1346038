"""Synthetic source clips for the data benchmarks (10 s 640x360 H.264 + stereo AAC by default)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from avfusion.data.manifest import Row


def make_clips(root: Path, n: int, seconds: float, size: tuple[int, int]) -> list[Row]:
    """n synthetic H.264 (crf 23, gop 250 like typical YouTube-derived mp4s) + AAC clips with
    moving texture (so decoding does real work)."""
    rows = []
    w, h = size
    rng = np.random.default_rng(0)
    # smooth blobs + mild grain: compresses like filmed content, not like white noise
    low = rng.integers(0, 256, (h // 16, w // 16, 3)).astype(np.float32)
    tex = np.kron(low, np.ones((32, 32, 1), np.float32))[: h * 2, : w * 2]
    for _ in range(3):  # box blur
        tex = (tex + np.roll(tex, 8, 0) + np.roll(tex, 8, 1) + np.roll(tex, -8, 0) + np.roll(tex, -8, 1)) / 5
    tex = np.clip(tex + rng.normal(0, 6, tex.shape), 0, 255).astype(np.uint8)
    for i in range(n):
        path = root / f"clip{i:03d}.mp4"
        c = av.open(str(path), "w")
        vs = c.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"preset": "veryfast", "crf": "23", "g": "250"}
        aus = c.add_stream("aac", rate=44100)
        aus.layout = "stereo"
        for k in range(int(seconds * 25)):
            dy, dx = (k * 3 + i) % h, (k * 5) % w
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(tex[dy : dy + h, dx : dx + w]), format="rgb24")
            f.pts = k
            for p in vs.encode(f):
                c.mux(p)
        for p in vs.encode(None):
            c.mux(p)
        t = np.arange(int(seconds * 44100)) / 44100
        x = (0.3 * np.sin(2 * np.pi * 440 * t) + rng.normal(0, 0.05, t.size)).astype(np.float32)
        data = np.stack([x, x])
        for s in range(0, x.size, 1024):
            fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[:, s : s + 1024]), format="fltp", layout="stereo")
            fr.sample_rate, fr.pts = 44100, s
            for p in aus.encode(fr):
                c.mux(p)
        for p in aus.encode(None):
            c.mux(p)
        c.close()
        rows.append(Row(f"clip{i:03d}", str(path), labels=["a"]))
    return rows
