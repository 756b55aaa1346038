import pytest
import torch

from avfusion.bench.memory import measure_peak
from avfusion.bench.peaks import matmul_precision, mfu, peak_tflops
from avfusion.bench.timing import Timing, load_average, time_fn


def test_time_fn_counts_warmup_and_repeats_with_a_fake_clock():
    calls, ticks = [], iter(range(100))
    t = time_fn(lambda: calls.append(1), warmup=2, repeats=3, clock=lambda: float(next(ticks)) ** 2)
    assert len(calls) == 5 and len(t.times) == 3 and t.warmup == 2
    assert t.times == [1.0, 5.0, 9.0]  # (1-0), (9-4), (25-16)
    assert t.median == 5.0 and t.min == 1.0


def test_timing_statistics():
    t = Timing([4.0, 1.0, 3.0, 2.0, 100.0], warmup=0)
    assert t.median == 3.0  # robust to the one outlier (a busy neighbour)
    assert t.iqr > 0 and Timing([1.0, 2.0], 0).iqr == 0.0
    d = t.to_dict()
    assert d["median"] == 3.0 and d["times"] == t.times


def test_time_fn_refuses_bad_counts():
    with pytest.raises(ValueError):
        time_fn(lambda: None, repeats=0)


def test_load_average_shape():
    la = load_average()
    assert la is None or (len(la) == 3 and all(x >= 0 for x in la))


def test_cpu_peak_memory_sees_a_large_allocation():
    n = 64 * 2**20  # 64 MiB, touched so it is resident

    def work():
        x = torch.ones(n // 4, dtype=torch.float32)
        return float(x[-1])

    peak = measure_peak(work, "cpu")
    assert peak.method in ("vmhwm", "ru_maxrss", "none")
    if peak.method == "vmhwm":
        assert peak.mib > 32  # RSS granularity and allocator caches: a loose bound


def test_peak_table_and_mfu():
    assert peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == pytest.approx(989.4)
    assert peak_tflops("NVIDIA H100 PCIe", "bf16") == pytest.approx(756.0)
    assert peak_tflops("NVIDIA H200", "bf16") == pytest.approx(989.4)
    assert peak_tflops("NVIDIA A100-SXM4-80GB", "fp32") == pytest.approx(19.5)
    assert peak_tflops("Some CPU", "bf16") is None
    assert mfu(494.7, "NVIDIA H100 80GB HBM3", "bf16") == pytest.approx(0.5, rel=1e-3)
    assert mfu(1.0, "unknown", "bf16") is None
    assert matmul_precision("bf16") == "bf16" and matmul_precision("fp32") in ("tf32", "fp32")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_memory():
    peak = measure_peak(lambda: torch.empty(2**20, device="cuda"), "cuda")
    assert peak.method == "cuda_max_memory_allocated" and peak.bytes >= 4 * 2**20
