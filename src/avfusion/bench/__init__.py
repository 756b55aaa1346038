"""Measuring speed: timing, peak memory, device peaks, and the model benchmark behind `avfusion bench`."""

from avfusion.bench.memory import PeakMemory, measure_peak
from avfusion.bench.peaks import mfu, peak_tflops
from avfusion.bench.runner import BenchConfig, attn_ratios, bench_model, bench_models, scheme_ratios
from avfusion.bench.timing import Timing, load_average, time_fn

__all__ = ["BenchConfig", "bench_models", "PeakMemory", "Timing", "attn_ratios", "bench_model", "load_average",
           "measure_peak", "mfu", "peak_tflops", "scheme_ratios", "time_fn"]
