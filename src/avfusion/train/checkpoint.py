"""Training checkpoints: written atomically, loaded without a full unpickler.

Layout of ``OUT/checkpoint/`` (the whole folder is replaced in one rename, so a kill at any
moment leaves either the previous complete checkpoint or the new one):

- ``model.safetensors`` + ``config.json``: an avfusion model directory (loadable on its own);
- ``extra.safetensors``: weights of training-only modules (contrastive projectors), if any;
- ``state.pt``: optimizer, scheduler, step, data position and RNG states, saved with
  ``torch.save`` and read back with ``weights_only=True`` (tensors and plain containers only).
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from avfusion.models.pretrained import WEIGHTS_NAME, save_pretrained

CHECKPOINT_DIR = "checkpoint"
STATE_NAME = "state.pt"
EXTRA_NAME = "extra.safetensors"


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),  # (version, tuple of ints, gauss_next): plain containers
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _numpy_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
            "gauss": float(gauss)}


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out: str | os.PathLike, model: nn.Module, extra: dict[str, nn.Module],
                    state: dict[str, Any]) -> Path:
    """Write OUT/checkpoint atomically (write a sibling temp folder, then swap it in)."""
    out = Path(out)
    final = out / CHECKPOINT_DIR
    tmp = out / f".{CHECKPOINT_DIR}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_pretrained(model, tmp)
    extra_state = {f"{name}.{k}": v.detach().cpu().contiguous() for name, m in extra.items()
                   for k, v in m.state_dict().items()}
    if extra_state:
        save_file(extra_state, str(tmp / EXTRA_NAME))
    torch.save(state, tmp / STATE_NAME)
    _fsync_dir(tmp)
    old = out / f".{CHECKPOINT_DIR}.old"
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)  # keep the previous one until the new one is in place
    os.replace(tmp, final)
    _fsync_dir(out)
    if old.exists():
        shutil.rmtree(old)
    return final


def find_checkpoint(out: str | os.PathLike) -> Path | None:
    """The complete checkpoint in OUT, if any (recovering from a kill between the two renames)."""
    out = Path(out)
    for name in (CHECKPOINT_DIR, f".{CHECKPOINT_DIR}.old"):
        p = out / name
        if (p / STATE_NAME).is_file() and (p / WEIGHTS_NAME).is_file():
            return p
    return None


def load_checkpoint(path: Path, model: nn.Module, extra: dict[str, nn.Module]) -> dict[str, Any]:
    """Load weights into ``model`` / ``extra`` modules; return the training state dict."""
    model.load_state_dict(load_file(str(path / WEIGHTS_NAME)), strict=True)
    if (path / EXTRA_NAME).is_file():
        flat = load_file(str(path / EXTRA_NAME))
        for name, m in extra.items():
            sub = {k[len(name) + 1:]: v for k, v in flat.items() if k.startswith(name + ".")}
            m.load_state_dict(sub, strict=True)
    return torch.load(path / STATE_NAME, map_location="cpu", weights_only=True)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
