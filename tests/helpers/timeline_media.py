"""Videos whose content changes over time, for the timeline tests, written with PyAV.

Each part is (class, seconds): frames tinted with that class's colour and a tone at 300 + 200 c Hz
(helpers/avclips.py's code), so a model that follows the content answers c while it lasts.
Audio and video may change at different times (``audio_parts``), start late (``start``: both
streams' first timestamp) or end apart (their parts' lengths differ).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from helpers.avclips import COLOURS

FPS, SR, SIZE = 25, 16000, 48


def tone(cls: int) -> float:
    return 300.0 + 200.0 * cls


def write_parts(path: Path, parts: list[tuple[int, float]], audio_parts: list[tuple[int, float]] | None = None,
                start: float = 0.0, seed: int = 0, video: bool = True, audio: bool = True,
                faststart: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    audio_parts = parts if audio_parts is None else audio_parts
    opts = {"movflags": "faststart"} if faststart else None
    with av.open(str(path), "w", options=opts) as c:
        if video:  # every stream is added before the first packet is written
            vs = c.add_stream("libx264", rate=FPS)
            vs.width = vs.height = SIZE
            vs.pix_fmt = "yuv420p"
            vs.options = {"preset": "ultrafast", "g": "12"}
        if audio:
            as_ = c.add_stream("aac", rate=SR)
            as_.layout = "mono"
        if video:
            i = 0
            for cls, seconds in parts:
                for _ in range(int(round(seconds * FPS))):
                    img = np.clip(np.array(COLOURS[cls], float) + rng.normal(0, 20, (SIZE, SIZE, 3)), 0, 255)
                    f = av.VideoFrame.from_ndarray(img.astype(np.uint8), format="rgb24")
                    f.pts, f.time_base = int(round(start * FPS)) + i, Fraction(1, FPS)
                    i += 1
                    for pkt in vs.encode(f):
                        c.mux(pkt)
            for pkt in vs.encode():
                c.mux(pkt)
        if audio:
            waves = []
            for cls, seconds in audio_parts:
                t = np.arange(int(round(seconds * SR))) / SR
                waves.append(0.5 * np.sin(2 * np.pi * tone(cls) * t) + rng.normal(0, 0.02, t.shape))
            wav = np.concatenate(waves).astype(np.float32)
            fs = as_.codec_context.frame_size or 1024
            for k in range(0, len(wav), fs):
                fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(wav[None, k:k + fs]), format="fltp",
                                                layout="mono")
                fr.sample_rate, fr.time_base, fr.pts = SR, Fraction(1, SR), int(round(start * SR)) + k
                for pkt in as_.encode(fr):
                    c.mux(pkt)
            for pkt in as_.encode():
                c.mux(pkt)
    return path
