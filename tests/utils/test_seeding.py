"""Seeds from integers (utils/seeding.py): mix_seed is a 63-bit function of its integers only,
the same in every process; seed_all seeds Python's, NumPy's and torch's global generators."""

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from avfusion.utils.seeding import mix_seed, seed_all


def test_mix_seed_is_a_63_bit_function_of_its_parts_in_order():
    assert mix_seed(1, 2) == mix_seed(1, 2)
    assert mix_seed(1, 2) != mix_seed(2, 1) and mix_seed(1, 2) != mix_seed(1, 2, 0)
    seeds = {mix_seed(epoch, i) for epoch in range(4) for i in range(256)}
    assert len(seeds) == 4 * 256
    assert all(0 <= s < 2**63 for s in seeds)


def test_mix_seed_is_the_same_in_another_process():
    code = "from avfusion.utils.seeding import mix_seed; print(mix_seed(3, 1 << 40, 7))"
    env = {**os.environ, "PYTHONHASHSEED": "12345",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2] / "src"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    assert int(out.stdout) == mix_seed(3, 1 << 40, 7)


def test_seed_all_seeds_python_numpy_and_torch():
    def draw() -> tuple[float, float, float]:
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    seed_all(mix_seed(7, 1))
    a = draw()
    seed_all(mix_seed(7, 1))
    b = draw()
    seed_all(mix_seed(7, 2))
    c = draw()
    assert a == b
    assert all(x != y for x, y in zip(a, c))


def test_seed_all_leaves_cuda_alone():
    """Per-sample seeding touches only the CPU generators: torch.manual_seed would queue a CUDA
    seeding with a formatted stack on every call before CUDA starts (3 ms each, a growing queue)."""
    queued = len(getattr(torch.cuda, "_queued_calls", []))
    for i in range(100):
        seed_all(i)
    assert len(getattr(torch.cuda, "_queued_calls", [])) == queued
