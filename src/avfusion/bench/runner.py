"""Benchmark one model: forward and forward + backward clips/s, peak memory, FLOPs and MFU.

Conventions:
- ``gflops``: model FLOPs of one forward pass per clip from :func:`avfusion.models.flops.count_flops`
  (one multiply-add = one FLOP, the ViViT / MBT convention), counted on the split attention
  path: the *useful* work, masked blocks excluded, whatever ``attn_impl`` runs. ``gflops_run``
  is the count for the path that ran (``dense`` computes the masked blocks too).
- A training step (``fwdbwd``) is 3x the forward FLOPs (backward = 2x forward); recomputation
  under gradient checkpointing is not counted (MFU, not hardware FLOPs utilisation).
- ``tflops`` (achieved) uses the hardware convention, 2 FLOPs per multiply-add, so that it can
  be divided by the datasheet peak (:mod:`avfusion.bench.peaks`) to give ``mfu``.
- The loss of a training step is the sum over every output head (as Zorro trains), so every
  head's backward is paid for.
"""

from __future__ import annotations

import contextlib
import ctypes
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from avfusion.bench.memory import measure_peak
from avfusion.bench.peaks import device_name, matmul_precision, mfu
from avfusion.bench.timing import Timing, load_average, synchronize
from avfusion.errors import ConfigError
from avfusion.core.config import ModelConfig
from avfusion.models.flops import count_flops
from avfusion.models.registry import build_model, get_model_config
from avfusion.utils.device import resolve_device

MODES = ("fwd", "fwdbwd")


@dataclass
class BenchConfig:
    batch_size: int = 2
    modes: tuple[str, ...] = MODES
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    compile: bool = False  # torch.compile, eager fallback if it fails
    grad_checkpointing: bool = False
    attn_impl: str | None = None  # None: the model's own
    optimizer: str = "none"  # none | sgd | adamw: add an optimizer step to fwdbwd
    fused: bool | None = None  # fused optimizer kernels (None: on CUDA)
    device: str = "auto"  # auto | cpu | cuda | cuda:N (avfusion.utils.device)
    warmup: int = 1
    repeats: int = 5
    memory: bool = True
    seed: int = 0
    threads: int | None = None  # torch.set_num_threads for the run (None: leave as is)

    def __post_init__(self) -> None:
        self.modes = tuple(self.modes)
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise ConfigError(f"modes must be among {MODES}, got {self.modes}")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"precision must be fp32 or bf16, got {self.precision!r}")
        if self.optimizer not in ("none", "sgd", "adamw"):
            raise ConfigError(f"optimizer must be none, sgd or adamw, got {self.optimizer!r}")
        counts_ok = self.batch_size >= 1 and self.repeats >= 1 and self.warmup >= 0
        if not counts_ok or (self.threads is not None and self.threads < 1):
            raise ConfigError(f"batch_size, repeats and threads must be >= 1 and warmup >= 0, got batch_size "
                              f"{self.batch_size}, repeats {self.repeats}, threads {self.threads}, "
                              f"warmup {self.warmup}")
        resolve_device(self.device)  # a device name torch does not know, or CUDA on a machine without it


def _trim_cpu_heap() -> None:
    """Return freed heap pages to the OS (glibc), so an RSS baseline is the live set, not caches."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def model_gflops(cfg: ModelConfig) -> tuple[float, float]:
    """(useful GFLOPs per clip on the split path, GFLOPs of the path ``cfg.attn_impl`` runs)."""
    useful = count_flops(cfg.replace(attn_impl="split")).gflops
    run = useful if cfg.attn_impl != "dense" else count_flops(cfg).gflops
    return useful, run


class _Case:
    """One (model, settings) pair made ready to run: model, inputs, FLOPs, and a step per mode."""

    def __init__(self, name: str | ModelConfig, bc: BenchConfig, overrides: dict[str, Any]):
        cfg = name if isinstance(name, ModelConfig) else get_model_config(name, **overrides)
        if isinstance(name, ModelConfig) and overrides:
            cfg = cfg.replace(**overrides)
        if bc.attn_impl is not None:
            cfg = cfg.replace(attn_impl=bc.attn_impl)
        self.cfg, self.bc, self.overrides = cfg, bc, overrides
        self.device = resolve_device(bc.device)
        torch.manual_seed(bc.seed)
        self.model = build_model(cfg).to(self.device)
        self.model.set_grad_checkpointing(bc.grad_checkpointing)
        self.inputs = self.model.example_inputs(bc.batch_size, device=self.device)
        self.gflops, self.gflops_run = model_gflops(cfg)
        self.opt = _optimizer(self.model, bc, self.device)
        self.compiled: Any = torch.compile(self.model) if bc.compile else self.model
        self.compile_note = "on" if bc.compile else "off"

    def _autocast(self) -> Any:
        if self.bc.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step_fn(self, mode: str) -> Callable[[], Any]:
        model, inputs, opt = self.model, self.inputs, self.opt

        def fwd() -> Any:
            model.eval()
            with torch.inference_mode(), self._autocast():
                return self.compiled(inputs).logits

        def fwdbwd() -> None:
            model.train()
            with self._autocast():
                out = self.compiled(inputs)
                loss = sum(o.float().mean() for o in out.outputs.values())
            loss.backward()
            if opt is not None:
                opt.step()
            model.zero_grad(set_to_none=True)

        return fwd if mode == "fwd" else fwdbwd

    def warm(self, mode: str) -> None:
        """The warm-up calls; with compile, the first one compiles (and falls back if it cannot)."""
        fn = self.step_fn(mode)
        if self.bc.compile and self.compiled is not self.model:
            try:
                fn()
            except Exception as e:  # an optimisation: say why it is off and measure eagerly
                print(f"torch.compile failed for {self.cfg.name} {mode} ({type(e).__name__}: {e}); "
                      "measuring eagerly", file=sys.stderr)
                self.compiled, self.compile_note = self.model, f"failed ({type(e).__name__})"
        for _ in range(self.bc.warmup):
            self.step_fn(mode)()
        synchronize(self.device)

    def row(self, mode: str, times: list[float], peak: Any, cpu_times: list[float]) -> dict[str, Any]:
        bc, cfg = self.bc, self.cfg
        timing = Timing(times, bc.warmup)
        sec = timing.median
        step_gflops = self.gflops * bc.batch_size * (3 if mode == "fwdbwd" else 1)
        tflops = 2 * step_gflops / sec / 1e3  # hardware convention: 2 FLOPs per multiply-add
        dev_name = device_name(self.device)
        util = mfu(tflops, dev_name, matmul_precision(bc.precision)) if self.device.type == "cuda" else None
        return {
            "model": cfg.name, "mode": mode, "attn_impl": cfg.attn_impl, "batch_size": bc.batch_size,
            "precision": bc.precision, "compile": self.compile_note, "grad_checkpointing": bc.grad_checkpointing,
            "optimizer": bc.optimizer if mode == "fwdbwd" else "none",
            "ms_per_step": 1e3 * sec, "iqr_ms": 1e3 * timing.iqr, "min_ms": 1e3 * timing.min,
            "clips_per_s": bc.batch_size / sec,
            # CPU time of the process (all threads) per step: on a CPU shared with other jobs it
            # measures the work rather than the wait; with 1 thread it is close to contention-free.
            "cpu_ms_per_step": 1e3 * statistics.median(cpu_times),
            "peak_mem_mib": None if peak is None else round(peak.mib, 1),
            "mem_method": None if peak is None else peak.method,
            "gflops": round(self.gflops, 3), "gflops_run": round(self.gflops_run, 3),
            "tflops": tflops, "mfu": util,
            "family": cfg.family, "fusion": cfg.fusion, "fusion_layer": cfg.fusion_layer,
            "tokens": _token_counts(cfg),
            "device": dev_name, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "load_avg": load_average(), "times_s": [round(t, 5) for t in times],
            "config": {"bench": asdict(bc), "overrides": self.overrides},
        }


def bench_models(specs: list[tuple[str | ModelConfig, BenchConfig, dict[str, Any]]],
                 interleave: bool = True) -> list[dict[str, Any]]:
    """Benchmark several (model, settings, overrides); one result row per spec and mode.

    With ``interleave`` the timed steps go round-robin (spec 1, spec 2, ..., spec 1, ...), so a
    change of load on a shared machine hits every spec alike and their ratios stay meaningful;
    every model is held in memory at once. Without it each spec is timed in turn.
    """
    threads = {bc.threads for _, bc, _ in specs} - {None}
    if len(threads) > 1:
        raise ValueError(f"one thread count per run, got {sorted(threads)}")
    if threads:
        torch.set_num_threads(threads.pop())
    cases = [_Case(name, bc, dict(ov)) for name, bc, ov in specs]
    work = [(c, mode) for c in cases for mode in c.bc.modes]
    times: dict[int, list[float]] = {i: [] for i in range(len(work))}
    cpu_times: dict[int, list[float]] = {i: [] for i in range(len(work))}

    def timed(i: int) -> None:
        c, mode = work[i]
        fn = c.step_fn(mode)
        synchronize(c.device)
        t0, p0 = time.perf_counter(), time.process_time()
        fn()
        synchronize(c.device)
        times[i].append(time.perf_counter() - t0)
        cpu_times[i].append(time.process_time() - p0)

    if interleave:
        for c, mode in work:
            c.warm(mode)
        for _ in range(max(c.bc.repeats for c in cases)):
            for i, (c, _mode) in enumerate(work):
                if len(times[i]) < c.bc.repeats:
                    timed(i)
    else:
        for i, (c, mode) in enumerate(work):
            c.warm(mode)
            for _ in range(c.bc.repeats):
                timed(i)
    rows = []
    for i, (c, mode) in enumerate(work):
        peak = None
        if c.bc.memory:
            if c.device.type == "cpu":
                _trim_cpu_heap()
            peak = measure_peak(c.step_fn(mode), c.device)
        rows.append(c.row(mode, times[i], peak, cpu_times[i]))
    return rows


def bench_model(name: str | ModelConfig, bc: BenchConfig | None = None, **overrides: Any) -> list[dict[str, Any]]:
    """Benchmark one model under ``bc``; one result row per mode."""
    return bench_models([(name, bc or BenchConfig(), overrides)])


def _optimizer(model: torch.nn.Module, bc: BenchConfig, device: torch.device) -> torch.optim.Optimizer | None:
    if bc.optimizer == "none":
        return None
    fused = bc.fused if bc.fused is not None else device.type == "cuda"
    if bc.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, fused=fused or None)
    return torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused or None)


def _token_counts(cfg: ModelConfig) -> dict[str, int]:
    t, h, w = cfg.tubelet
    video = (cfg.num_frames // t) * (cfg.image_size[0] // h) * (cfg.image_size[1] // w)
    audio = (cfg.spec_size[0] // cfg.spec_patch[0]) * (cfg.spec_size[1] // cfg.spec_patch[1])
    return {"audio": audio, "video": video}


# -- ratio tables ------------------------------------------------------------------------------
_SETTING = ("mode", "batch_size", "precision", "compile", "grad_checkpointing", "optimizer")


def _role(r: dict[str, Any]) -> str | None:
    if r["family"] == "streams" and r["fusion"] == "bottleneck":
        return "mbt"
    if r["family"] == "streams" and r["fusion"] == "concat" and r["fusion_layer"] == 0:
        return "early"
    if r["family"] == "masked" and r["fusion"] == "zorro":
        return "zorro"
    return None


def attn_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Dense-mask time / efficient-path time per model and setting, beside the FLOP ratio."""
    out = []
    for r in rows:
        if r["attn_impl"] == "dense":
            continue
        for d in rows:
            if (d["attn_impl"] == "dense" and d["model"] == r["model"]
                    and all(d[k] == r[k] for k in _SETTING)):
                out.append({"model": r["model"], "mode": r["mode"], "impl": r["attn_impl"],
                            "dense_ms": d["ms_per_step"], "impl_ms": r["ms_per_step"],
                            "speedup": d["ms_per_step"] / r["ms_per_step"],
                            "speedup_min": d.get("min_ms", 1.0) / r.get("min_ms", 1.0),
                            "speedup_cpu": d.get("cpu_ms_per_step", 1.0) / r.get("cpu_ms_per_step", 1.0),
                            "flop_ratio": d["gflops_run"] / r["gflops_run"]})
    return out


def scheme_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Time ratio against FLOP ratio for early fusion / MBT and Zorro / MBT (same setting)."""
    out = []
    for a_role, b_role in (("early", "mbt"), ("zorro", "mbt")):
        for a in rows:
            if _role(a) != a_role or a["attn_impl"] == "dense":
                continue
            for b in rows:
                if (_role(b) == b_role and all(a[k] == b[k] for k in _SETTING)
                        and a["tokens"] == b["tokens"] and a["attn_impl"] == b["attn_impl"]):
                    out.append({"pair": f"{a['model']} / {b['model']}", "mode": a["mode"],
                                "time_ratio": a["ms_per_step"] / b["ms_per_step"],
                                "time_ratio_min": a.get("min_ms", 1.0) / b.get("min_ms", 1.0),
                                "time_ratio_cpu": a.get("cpu_ms_per_step", 1.0) / b.get("cpu_ms_per_step", 1.0),
                                "flop_ratio": a["gflops_run"] / b["gflops_run"]})
    return out
