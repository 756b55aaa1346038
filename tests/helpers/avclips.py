"""Small class-coded audio-visual clips for the end-to-end CLI tests, written with PyAV.

Class c: frames tinted with colour c (plus noise), audio a tone at 300 + 200 c Hz (plus noise).
"""

from __future__ import annotations

import csv
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

COLOURS = [(220, 40, 40), (40, 200, 40), (40, 60, 220), (220, 200, 40)]


def write_clip(path: Path, cls: int, seed: int, seconds: float = 1.6, fps: int = 25, size: int = 48,
               sr: int = 16000, audio: bool = True, video: bool = True) -> None:
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as c:
        vs = as_ = None
        if video:
            vs = c.add_stream("libx264", rate=fps)
            vs.width = vs.height = size
            vs.pix_fmt = "yuv420p"
            vs.options = {"preset": "ultrafast"}
        if audio:
            as_ = c.add_stream("aac", rate=sr)
            as_.layout = "mono"
        if vs is not None:
            for i in range(int(seconds * fps)):
                img = np.clip(np.array(COLOURS[cls], float) + rng.normal(0, 25, (size, size, 3)), 0, 255)
                frame = av.VideoFrame.from_ndarray(img.astype(np.uint8), format="rgb24")
                for pkt in vs.encode(frame):
                    c.mux(pkt)
            for pkt in vs.encode():
                c.mux(pkt)
        if as_ is not None:
            t = np.arange(int(seconds * sr)) / sr
            wav = 0.5 * np.sin(2 * np.pi * (300 + 200 * cls) * t) + rng.normal(0, 0.05, t.shape)
            frame = av.AudioFrame.from_ndarray(wav.astype(np.float32)[None], format="fltp", layout="mono")
            frame.sample_rate = sr
            frame.time_base = Fraction(1, sr)
            frame.pts = 0
            for pkt in as_.encode(frame):
                c.mux(pkt)
            for pkt in as_.encode():
                c.mux(pkt)


def make_dataset(root: Path, n_per_class: int, classes: int = 4, seed: int = 0, prefix: str = "clip") -> Path:
    """Clips + manifest.csv; returns the manifest path. Labels: display names c0..c{classes-1}."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for c in range(classes):
        for j in range(n_per_class):
            path = root / f"{prefix}_{c}_{j}.mp4"
            write_clip(path, c, seed * 1000 + c * 100 + j)
            rows.append({"id": path.stem, "path": str(path), "labels": f"c{c}"})
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "path", "labels"])
        w.writeheader()
        w.writerows(rows)
    return manifest


def write_labels(path: Path, classes: int = 4) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "mid", "display_name"])
        for c in range(classes):
            w.writerow([c, f"/test/c{c}", f"c{c}"])
    return path
