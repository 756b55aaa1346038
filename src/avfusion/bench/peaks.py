"""Peak dense throughput of known accelerators, for model FLOPs utilisation (MFU).

Numbers are the vendor's datasheet peaks for *dense* math (no 2:4 sparsity), in TFLOP/s where
one multiply-add counts as 2 FLOPs (the hardware convention). Sources:

- H100 SXM5: NVIDIA H100 Tensor Core GPU datasheet: BF16/FP16 tensor 989.4 (1,979 with
  sparsity), TF32 494.7, FP32 66.9. H100 PCIe: 756 / 378 / 51.2. H100 NVL: 835 / 418 / 60.
- H200 SXM: NVIDIA H200 datasheet: same compute die as H100 SXM, BF16 989.4, TF32 494.7, FP32 66.9.
- A100 (SXM and PCIe): NVIDIA A100 datasheet: BF16 312, TF32 156, FP32 19.5.
- L4: NVIDIA L4 datasheet: BF16 121 (242 with sparsity), TF32 60, FP32 30.3.

A CPU has no entry: MFU is then not reported.
"""

from __future__ import annotations

import torch

# (substring of torch.cuda.get_device_name, lowercase) -> precision -> peak TFLOP/s (dense).
# Order matters: more specific names first.
PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("h100 nvl", {"bf16": 835.0, "tf32": 418.0, "fp32": 60.0}),
    ("h100 pcie", {"bf16": 756.0, "tf32": 378.0, "fp32": 51.2}),
    ("h100", {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9}),  # SXM5 (the usual "H100 80GB HBM3")
    ("h200", {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    ("a100", {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    ("l4", {"bf16": 121.0, "tf32": 60.0, "fp32": 30.3}),
)


def peak_tflops(device_name: str, precision: str) -> float | None:
    """Datasheet dense peak for ``device_name`` at ``precision`` ('bf16', 'tf32', 'fp32'), or None."""
    name = device_name.lower()
    for key, table in PEAK_TFLOPS:
        if key in name:
            return table.get(precision)
    return None


def matmul_precision(precision: str) -> str:
    """The peak to compare against: fp32 runs on TF32 tensor cores when torch allows it."""
    if precision == "bf16":
        return "bf16"
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "fp32"


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def mfu(achieved_tflops: float, device_name_: str, precision: str) -> float | None:
    """Model FLOPs utilisation: achieved / peak, or None for an unknown device."""
    peak = peak_tflops(device_name_, precision)
    return achieved_tflops / peak if peak else None
