"""The training input path: clips per second per loader worker, where a clip's time goes, and
how a DataLoader scales with workers.

Paths over the same clips (MBT's AudioSet sizes by default: 32 frames every 2 at 25 fps,
224 x 224, 800 x 128 fbank from an 8.015 s window; training mode: random clip, random resized crop,
flip, SpecAugment):

- ``pyav-floor``: bare PyAV decoding of the frames and audio a clip shows, nothing on top;
- ``mp4``: ``VideoDataset`` decoding each source file;
- ``shards-jpeg``: ``ShardSamples`` (random access) over ``--video-format jpeg`` shards;
- ``shards-h264``: ``ShardSamples`` over default ``avfusion prepare`` shards (H.264, 256p,
  16-frame GOPs, tune=fastdecode, frames at 25 fps);
- ``shards-h264-stream``: the same shards streamed by ``ShardDataset`` (as from a URL);
- ``shards-h264 +device``: the worker's part with ``data.features_on=device`` (decode, place,
  crop, flip; fbank, SpecAugment and normalisation run on the batch on the GPU);
- ``shards-h264@12.5 +device``: shards stored at fps / frame_stride (``prepare --fps 12.5``:
  exactly the frames a stride-2 clip uses) with features on the device;
- ``batch-features``: ``BatchFeatures`` on this CPU per clip (what the device does instead).

Times are CPU time of this process per clip (one thread), median over ``--rounds`` rounds that
visit the paths in turn (a shared VM's wall time drifts by 30% and more between minutes); the
DataLoader scaling table is wall time.

Usage::

    python benchmarks/data.py                   # synthetic 10 s 640x360 H.264/AAC clips
    python benchmarks/data.py --manifest M.csv --labels L.csv   # your own files
    python benchmarks/data.py --profile         # + where a shards-h264 clip's time goes
    python benchmarks/data.py --json out.json
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import json
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: synthetic_clips

from avfusion.data.clips import ClipConfig, ClipProcessor, FileSegment  # noqa: E402
from avfusion.data.datasets import VideoDataset, collate  # noqa: E402
from avfusion.data.features import BatchFeatures  # noqa: E402
from avfusion.data.manifest import LabelMap, Row, read_manifest  # noqa: E402
from avfusion.data.prepare import write_shards  # noqa: E402
from avfusion.data.shards import ShardDataset, ShardSamples  # noqa: E402
from avfusion.core.config import ModelConfig  # noqa: E402
from avfusion.utils.seeding import mix_seed, seed_all  # noqa: E402
from synthetic_clips import make_clips  # noqa: E402


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


def per_clip_ms(fn, n: int) -> float:
    t = time.process_time()
    fn()
    return (time.process_time() - t) / n * 1000


def seeded(ds):  # the training loop seeds each sample's augmentation; do the same
    def get(i: int, r: int):
        seed_all(mix_seed(0, r, i))
        return ds[i]
    return get


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest")
    ap.add_argument("--labels")
    ap.add_argument("--clips", type=int, default=16, help="synthetic clips to make")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--size", default="640x360", help="synthetic frame size WxH")
    ap.add_argument("--rounds", type=int, default=5, help="rounds over all paths (median reported)")
    ap.add_argument("--workers", default="0,1,2", help="DataLoader workers to time (comma-separated)")
    ap.add_argument("--profile", action="store_true", help="where a shards-h264 clip's time goes")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)  # one worker = one core
    cfg = ClipConfig.from_model(ModelConfig())
    dev = dataclasses.replace(cfg, audio_output="waveform", video_output="uint8")
    stride = cfg.preprocess.frame_stride
    cfg_12 = dataclasses.replace(cfg, preprocess=dataclasses.replace(cfg.preprocess, fps=cfg.preprocess.fps / stride))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if a.manifest:
            rows, labels = read_manifest(a.manifest), LabelMap.read(a.labels)
        else:
            w, h = (int(x) for x in a.size.split("x"))
            rows, labels = make_clips(root, a.clips, a.seconds, (w, h)), LabelMap.from_names(["a"])
        made = {"jpeg": write_shards(rows, labels, cfg, root / "jpeg", max_count=64, video_format="jpeg"),
                "h264": write_shards(rows, labels, cfg, root / "h264", max_count=64),
                "h264@12.5": write_shards(rows, labels, cfg_12, root / "h264_12", max_count=64)}
        assert all(r.failed == 0 for r in made.values()), [r.failures for r in made.values()]
        n = len(rows)
        sets = {
            "mp4": VideoDataset(rows, labels, cfg, train=True),
            "shards-jpeg": ShardSamples(root / "jpeg", labels, cfg, train=True),
            "shards-h264": ShardSamples(root / "h264", labels, cfg, train=True),
            "shards-h264 +device": ShardSamples(root / "h264", labels, dev, train=True),
            "shards-h264@12.5 +device": ShardSamples(root / "h264_12", labels, dev, train=True),
        }
        stream = ShardDataset(root / "h264", labels, cfg, train=True, shuffle=0)
        raw_batch = collate([{**sets["shards-h264 +device"][i], "id": str(i)} for i in range(min(n, 8))])
        features = BatchFeatures(dev, train=True)
        paths = {
            "pyav-floor": lambda r: pyav_floor(rows, cfg, r),
            **{name: (lambda r, ds=ds: [seeded(ds)(i, r) for i in range(n)]) for name, ds in sets.items()},
            "shards-h264-stream": lambda r: [s for s in stream],
            "batch-features": lambda r: [features(dict(raw_batch), torch.Generator().manual_seed(r))
                                         for _ in range(n // len(raw_batch["id"]) or 1)],
        }
        per_path_n = {k: (len(raw_batch["id"]) * (n // len(raw_batch["id"]) or 1) if k == "batch-features" else n)
                      for k in paths}
        for fn in paths.values():  # warm caches and imports
            fn(0)
        ms: dict[str, list[float]] = {k: [] for k in paths}
        for r in range(1, a.rounds + 1):
            for k, fn in paths.items():
                ms[k].append(per_clip_ms(lambda fn=fn, r=r: fn(r), per_path_n[k]))
        results = [{"path": k, "ms_per_clip": round(statistics.median(v), 1),
                    "clips_per_s": round(1000 / statistics.median(v), 1),
                    "range_clips_per_s": [round(1000 / max(v), 1), round(1000 / min(v), 1)]} for k, v in ms.items()]
        scaling = []
        for workers in (int(x) for x in a.workers.split(",")):
            ds = sets["shards-h264"]
            loader = DataLoader(ds, batch_size=8, shuffle=True, num_workers=workers, collate_fn=collate,
                                drop_last=True, persistent_workers=workers > 0)
            for _ in loader:  # warm-up epoch (worker start-up)
                pass
            t = time.perf_counter()
            seen = sum(len(b["id"]) for _ in range(3) for b in loader)
            scaling.append({"workers": workers, "clips_per_s": round(seen / (time.perf_counter() - t), 1)})
        sizes = {k: round(sum(os.path.getsize(s) for s in r.shards) / 1e6, 1) for k, r in made.items()}
        sizes["source"] = round(sum(os.path.getsize(r.path) for r in rows) / 1e6, 1)
        profile = None
        if a.profile:
            pr = cProfile.Profile()
            ds = sets["shards-h264"]
            pr.enable()
            for r in range(3):
                for i in range(n):
                    seeded(ds)(i, r)
            pr.disable()
            st = pstats.Stats(pr)
            total = st.total_tt
            rows_ = sorted(((v[2], f"{Path(k[0]).name}:{k[2]}") for k, v in st.stats.items()), reverse=True)[:12]
            profile = [{"function": name, "share": round(tt / total, 3)} for tt, name in rows_]
    info = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "torch": torch.__version__, "av": av.__version__, "clip": "32 frames / 2 @ 25 fps, 224^2, 800x128 fbank",
            "clips": n, "rounds": a.rounds, "sizes_MB": sizes, "results": results, "dataloader": scaling,
            "profile": profile}
    print(f"{'path':<26} {'ms/clip (CPU)':>13} {'clips/s/worker':>15} {'range':>14}")
    for r in results:
        lo, hi = r["range_clips_per_s"]
        print(f"{r['path']:<26} {r['ms_per_clip']:>13.1f} {r['clips_per_s']:>15.1f} {f'{lo}-{hi}':>14}")
    print("DataLoader over shards-h264 (batch 8, wall clock): " +
          ", ".join(f"{s['workers']} workers {s['clips_per_s']} clips/s" for s in scaling))
    print(f"sizes MB: {sizes}; {info['machine']}")
    if profile:
        print("where a shards-h264 clip's time goes (self time):")
        for p in profile:
            print(f"  {p['share']:6.1%}  {p['function']}")
    if a.json:
        Path(a.json).write_text(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
