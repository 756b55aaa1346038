"""Data-loading throughput: clips per second per worker (one process, no DataLoader).

Three paths over the same clips (MBT's AudioSet sizes by default: 32 frames every 2 at 25 fps,
224 x 224, 800 x 128 fbank from an 8.015 s window):

- ``pyav-floor``: bare PyAV decoding of the same frames and audio (decode + RGB conversion of the
  frames the clip shows, audio decoded and resampled), no resize / crop / fbank / transforms.
  The floor for any decoder-based loader.
- ``mp4``: ``VideoDataset`` (train mode), decoding each file directly: PyAV + swscale resize to
  the short side, random resized crop, flip, fbank, normalisation, SpecAugment.
- ``shards-h264``: ``ShardDataset`` (train mode) over shards made by ``avfusion prepare``
  (default H.264 256p, 16-frame GOPs): decode the GOPs holding the clip's frames + the same
  transforms.
- ``shards-jpeg``: the same over ``--video-format jpeg`` shards: JPEG-decode only the needed frames.

Usage::

    python benchmarks/data.py                 # synthetic 10 s 640x360 H.264/AAC clips
    python benchmarks/data.py --manifest M.csv --labels L.csv   # your own files
    python benchmarks/data.py --json out.json

Per worker: multiply by the loader's workers (decoding is CPU-bound and scales with cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "data"))

from avfusion.data.clips import ClipConfig, ClipProcessor, FileSegment  # noqa: E402
from avfusion.data.datasets import VideoDataset  # noqa: E402
from avfusion.data.manifest import LabelMap, Row, read_manifest  # noqa: E402
from avfusion.data.prepare import write_shards
from avfusion.data.shards import ShardDataset  # noqa: E402
from avfusion.models.config import ModelConfig  # noqa: E402


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


def pyav_floor(rows: list[Row], cfg: ClipConfig, seed: int) -> None:
    """Decode exactly what one training clip needs, with nothing on top."""
    g = torch.Generator().manual_seed(seed)
    proc = ClipProcessor(cfg, train=True)
    p = cfg.preprocess
    for r in rows:
        seg = FileSegment(r.path, r.start, r.end, cfg)
        (c_,) = proc.centres(seg, g)
        times = cfg.video_times(c_)
        a0, a1 = cfg.audio_span(c_)
        with av.open(r.path) as c:
            vs = c.streams.video[0]
            if times[0] > 0.5:
                c.seek(int((times[0] - 0.1) / float(vs.time_base)), stream=vs)
            k = 0
            last = None
            for f in c.decode(vs):
                while k < len(times) and times[k] + 1e-3 < f.time:
                    last.to_ndarray(format="rgb24")
                    k += 1
                if k >= len(times):
                    break
                last = f
        with av.open(r.path) as c:
            aus = c.streams.audio[0]
            if a0 > 0.5:
                c.seek(int((a0 - 0.1) / float(aus.time_base)), stream=aus)
            rs = av.AudioResampler(format="flt", layout="mono", rate=p.sample_rate)
            for f in c.decode(aus):
                rs.resample(f)
                if f.time > a1:
                    break


def run(name: str, fn, n: int) -> dict:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    fn()
    dt = time.perf_counter() - t
    return {"path": name, "clips": n, "seconds": round(dt, 3), "clips_per_s": round(n / dt, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest")
    ap.add_argument("--labels")
    ap.add_argument("--clips", type=int, default=16, help="synthetic clips to make")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--size", default="640x360", help="synthetic frame size WxH")
    ap.add_argument("--repeat", type=int, default=2, help="passes over the clips per path")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)  # one worker = one core
    cfg = ClipConfig.from_model(ModelConfig())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if a.manifest:
            rows, labels = read_manifest(a.manifest), LabelMap.read(a.labels)
        else:
            w, h = (int(x) for x in a.size.split("x"))
            rows, labels = make_clips(root, a.clips, a.seconds, (w, h)), LabelMap.from_names(["a"])
        res = write_shards(rows, labels, cfg, root / "shards", max_count=64, video_format="jpeg")
        res264 = write_shards(rows, labels, cfg, root / "shards264", max_count=64, video_format="h264")
        assert res.failed == 0 and res264.failed == 0, res.failures + res264.failures
        n = len(rows) * a.repeat
        ds = VideoDataset(rows, labels, cfg, train=True, seed=0)
        sds = ShardDataset(root / "shards", labels, cfg, train=True, shuffle=0)
        sds264 = ShardDataset(root / "shards264", labels, cfg, train=True, shuffle=0)
        results = [
            run("pyav-floor", lambda: [pyav_floor(rows, cfg, s) for s in range(a.repeat)], n),
            run("mp4", lambda: [ds[i % len(ds)] for i in range(n)], n),
            run("shards-jpeg", lambda: [s for _ in range(a.repeat) for s in sds], n),
            run("shards-h264", lambda: [s for _ in range(a.repeat) for s in sds264], n),
        ]
        shard_mb = sum(os.path.getsize(s) for s in res.shards) / 1e6
        shard264_mb = sum(os.path.getsize(s) for s in res264.shards) / 1e6
        src_mb = sum(os.path.getsize(r.path) for r in rows) / 1e6
    info = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "torch": torch.__version__, "av": av.__version__, "clip": "32 frames / 2 @ 25 fps, 224^2, 800x128 fbank",
            "source_MB": round(src_mb, 1), "shards_MB": round(shard_mb, 1),
            "shards_h264_MB": round(shard264_mb, 1), "results": results}
    print(f"{'path':<12} {'clips':>6} {'seconds':>8} {'clips/s/worker':>15}")
    for r in results:
        print(f"{r['path']:<12} {r['clips']:>6} {r['seconds']:>8.2f} {r['clips_per_s']:>15.2f}")
    print(f"source {src_mb:.1f} MB, shards {shard_mb:.1f} MB (jpeg), {shard264_mb:.1f} MB (h264); {info['machine']}")
    if a.json:
        Path(a.json).write_text(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
