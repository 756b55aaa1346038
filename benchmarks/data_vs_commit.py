"""The shard input path of this tree against an earlier commit's, side by side on this machine.

    python benchmarks/data_vs_commit.py 2f28f95          # the commit before the scale-path work

Checks the commit out into a temporary git worktree, then alternates processes (old, new, old,
new, ...) that each prepare the same synthetic clips with their own `prepare` defaults and time a
training clip from those shards (one thread, CPU time per clip, median over the runs): the old
tree's default (its ShardDataset), this tree's default (what `avfusion train` reads local shards
with) and this tree's fastest setting (shards at fps / frame_stride, features on the device).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs inside each process, against whichever avfusion is first on the path.
PROBE = r"""
import dataclasses, json, statistics, sys, tempfile, time
from pathlib import Path
import torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[1])  # benchmarks/ of this tree: make_clips
from synthetic_clips import make_clips
from avfusion.data.clips import ClipConfig
from avfusion.data.manifest import LabelMap
from avfusion.core.config import ModelConfig
try:
    from avfusion.data.prepare import write_shards
    new = True
except ImportError:
    from avfusion.data.shards import write_shards
    new = False
from avfusion.data import shards as S
cfg = ClipConfig.from_model(ModelConfig())
labels = LabelMap.from_names(["a"])
out = {}
with tempfile.TemporaryDirectory() as tmp:
    root = Path(tmp)
    rows = make_clips(root, int(sys.argv[2]), 10.0, (640, 360))
    def timed(ds, get):
        get(ds, 0)
        t = time.process_time()
        n = get(ds, 1)
        return (time.process_time() - t) / n * 1000
    def by_index(ds, r):
        for i in range(len(ds)):
            torch.manual_seed(r * 1000 + i)
            ds[i]
        return len(ds)
    def by_iter(ds, r):
        return sum(1 for _ in ds)
    write_shards(rows, labels, cfg, root / "h264", max_count=64)
    if new:
        out["default"] = timed(S.ShardSamples(root / "h264", labels, cfg, train=True), by_index)
        dev = dataclasses.replace(cfg, audio_output="waveform", video_output="uint8")
        c12 = dataclasses.replace(cfg, preprocess=dataclasses.replace(cfg.preprocess, fps=12.5))
        write_shards(rows, labels, c12, root / "h264_12", max_count=64)
        out["fastest"] = timed(S.ShardSamples(root / "h264_12", labels, dev, train=True), by_index)
    else:
        out["default"] = timed(S.ShardDataset(root / "h264", labels, cfg, train=True), by_iter)
print(json.dumps(out))
"""


def run(src: Path, clips: int) -> dict[str, float]:
    env_path = str(src)
    proc = subprocess.run([sys.executable, "-c", PROBE, str(ROOT / "benchmarks"), str(clips)], capture_output=True,
                          text=True, env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    if proc.returncode:
        raise SystemExit(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rev", help="the commit to compare with")
    ap.add_argument("--runs", type=int, default=3, help="process pairs (old, new)")
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--json")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old_tree = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old_tree), a.rev], check=True,
                       capture_output=True)
        try:
            old, new = [], []
            for _ in range(a.runs):
                old.append(run(old_tree / "src", a.clips))
                new.append(run(ROOT / "src", a.clips))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old_tree)], check=False)
    med = {"old default": statistics.median(r["default"] for r in old),
           "new default": statistics.median(r["default"] for r in new),
           "new fastest": statistics.median(r["fastest"] for r in new)}
    base = med["old default"]
    print(f"{'shard input path':<22} {'ms/clip (CPU)':>13} {'clips/s/worker':>15} {'vs ' + a.rev:>14}")
    for k, v in med.items():
        print(f"{k:<22} {v:>13.1f} {1000 / v:>15.1f} {base / v:>13.2f}x")
    if a.json:
        Path(a.json).write_text(json.dumps({"rev": a.rev, "runs": {"old": old, "new": new}, "median_ms": med}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
