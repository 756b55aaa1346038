"""Model directories (DESIGN.md section 5): ``model.safetensors`` + ``config.json``.

``config.json`` is ``ModelConfig.to_dict()`` (architecture, classes and preprocessing), so a
directory is enough to rebuild the model and its input pipeline. Weights are safetensors only:
nothing here ever unpickles.

A damaged directory is an InputError naming the file and what is wrong with it (one line on the
command line): weights cut short, a pickle saved under the safetensors name, a config.json that
is not JSON or not a model config, weights that do not fit the config or hold NaN. Every command
that takes ``--model DIR`` (predict, eval, embed, export, ``train --init-from``) loads through
:func:`load_pretrained`, and the contrastive projectors through :func:`read_safetensors`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from avfusion.errors import ConfigError, InputError
from avfusion.core.base import AVModel
from avfusion.core.config import ModelConfig
from avfusion.models.registry import build_model
from avfusion.utils.files import atomic_write

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def cpu_state(module: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """``module``'s state as safetensors stores it: plain, unshared, contiguous CPU tensors."""
    return {prefix + k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def model_files(model: torch.nn.Module, metadata: dict[str, str] | None = None) -> dict[str, bytes]:
    """The files of ``model``'s (an AVModel) directory, as bytes: ``model.safetensors`` (with
    ``metadata``) and ``config.json``. Written by :func:`save_pretrained`; a training checkpoint
    holds the same two files."""
    cfg: ModelConfig = model.cfg  # type: ignore[assignment]
    meta = {"format": "pt", "avfusion_model": cfg.name, **(metadata or {})}
    return {WEIGHTS_NAME: save(cpu_state(model), metadata=meta),
            CONFIG_NAME: (json.dumps(cfg.to_dict(), indent=2) + "\n").encode()}


def save_pretrained(model: torch.nn.Module, directory: str | os.PathLike,
                    metadata: dict[str, str] | None = None) -> Path:
    """Write ``model`` (an AVModel) to ``directory``, each file replaced atomically and fsynced;
    returns the directory."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in model_files(model, metadata).items():
        atomic_write(out / name, data)
    return out


def load_config(path: str | os.PathLike, **overrides: Any) -> ModelConfig:
    """The ModelConfig of a model directory (``path`` is the directory or its config.json)."""
    p = Path(path)
    cfg_path = p / CONFIG_NAME if p.is_dir() else p
    if not cfg_path.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {str(p)!r}: not an avfusion model directory")
    try:
        d = json.loads(cfg_path.read_bytes())
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise InputError(f"{str(cfg_path)!r} is not valid JSON ({e}); the model directory is damaged") from None
    if not isinstance(d, dict):
        raise InputError(f"{str(cfg_path)!r} holds a {type(d).__name__}, not a model config (a JSON object)")
    try:
        cfg = ModelConfig.from_dict(d)
    except (ConfigError, TypeError, ValueError) as e:  # the user's overrides are checked below, apart
        raise InputError(f"{str(cfg_path)!r} is not a usable model config: {str(e).splitlines()[0]}") from None
    return cfg.replace(**overrides) if overrides else cfg


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, on the CPU. A file that is not one (cut short, a pickle
    saved under the name, other bytes) is an InputError naming it and what is wrong."""
    try:
        return load_file(str(path), device="cpu")
    except SafetensorError as e:
        raise InputError(f"{str(path)!r} {_safetensors_problem(Path(path), e)}") from None


# safetensors' header is an 8-byte little-endian length and that much JSON; a longer claimed
# header (safetensors' own limit is 100 MB) means the file is something else.
_MAX_HEADER = 100_000_000


def _safetensors_problem(path: Path, error: Exception) -> str:
    """What is wrong with a file safetensors refused, in words (it says only "invalid header")."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch.save's zip / a bare pickle
            return ("is a pickle (torch.save), not a safetensors file; avfusion never unpickles weights (load it "
                    "where you trust it and write it with avfusion.save_pretrained)")
        if size < 8:
            return f"is cut short: {size} bytes, not even a safetensors header"
        n = int.from_bytes(head, "little")
        if n > _MAX_HEADER:
            return "is not a safetensors file (its first 8 bytes are no header length)"
        if 8 + n > size:
            return f"is cut short: {size} bytes, but its header alone takes {8 + n}"
        try:
            header = json.loads(f.read(n))
            need = 8 + n + max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"),
                               default=0)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            return "has a damaged header (not the JSON index of its tensors)"
    if need > size:
        return f"is cut short: {size} bytes of the {need} its index of tensors needs"
    return f"is not a readable safetensors file ({str(error).splitlines()[0][:200]})"


def load_pretrained(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    **overrides: Any) -> AVModel:
    """Rebuild the model saved in ``path`` by :func:`save_pretrained`, in eval mode.

    ``overrides`` are ModelConfig fields that do not change parameter shapes (e.g.
    ``attn_impl='dense'``, ``drop_path_rate=0.1``); one that does is refused, naming the tensor.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(f"{str(directory)!r} is not a directory (expected {WEIGHTS_NAME} + {CONFIG_NAME})")
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_NAME} in {str(directory)!r}")
    cfg = load_config(directory, **overrides)
    model = build_model(cfg)
    state = read_safetensors(weights)
    # A model saved from a diverged run would print NaN scores: refuse it, naming the file.
    bad = [k for k, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise InputError(f"{str(weights)!r}: {len(bad)} of {len(state)} weight tensors hold NaN or inf "
                         f"(first: {bad[0]!r}); the training that wrote it diverged, so the model is unusable")
    own = model.state_dict()
    for name, t in state.items():
        if name in own and own[name].shape != t.shape:
            # the fix is other overrides when they changed the shape, else another directory
            raise (ConfigError if overrides else InputError)(
                f"{str(weights)!r}: tensor {name!r} has shape {tuple(t.shape)} but the model built "
                f"from config.json{' with overrides ' + str(overrides) if overrides else ''} expects "
                f"{tuple(own[name].shape)}"
            )
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InputError(
            f"{str(weights)!r} does not match its config: missing {sorted(missing)}, "
            f"unexpected {sorted(unexpected)}"
        )
    return model.to(map_location).eval()


def model_fingerprint(model: torch.nn.Module) -> dict[str, str]:
    """The model's name and a sha256 of its config and every weight (wherever it was loaded from);
    a model prepared for inference (infer/fast.py) has it from its weights as loaded."""
    known = getattr(model, "fingerprint", None)
    if known is not None:
        return known
    h = hashlib.sha256(json.dumps(model.cfg.to_dict(), sort_keys=True, default=str).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return {"name": model.cfg.name, "sha256": h.hexdigest()}
