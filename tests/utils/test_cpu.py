"""utils/cpu.py: the one place that says what this CPU and torch build can do."""

from avfusion.layers import gemm_tune
from avfusion.utils.cpu import cpu_info, onednn_int8, onednn_linear, simd_flags


def test_cpu_info_is_read_once_and_names_the_cpu() -> None:
    model, flags = cpu_info()
    assert model and isinstance(flags, frozenset)
    assert cpu_info() is cpu_info()  # cached: every layer may ask
    # the per-host GEMM cache is keyed on the same reading
    assert gemm_tune.host_info()["cpu"] == model


def test_onednn_checks_answer_for_this_torch() -> None:
    assert isinstance(onednn_linear(), bool) and isinstance(onednn_int8(), bool)


def test_simd_flags_are_this_cpus_vector_flags_sorted() -> None:
    flags = simd_flags()
    assert flags == sorted(flags) and set(flags) <= cpu_info()[1]
    assert all(f.startswith(("avx", "amx")) or f in ("fma", "f16c") for f in flags)
