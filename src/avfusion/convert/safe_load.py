"""Read checkpoint files without ever running code from them (DESIGN.md section 5).

- ``.safetensors``: safetensors (no code by construction);
- ``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt``: ``torch.load(weights_only=True)``; a pickle that
  names anything beyond tensors and plain containers is refused with :class:`UnsafeCheckpointError`;
- ``.npz``: ``numpy.load(allow_pickle=False)``;
- ``.msgpack`` (flax ``serialization.to_bytes``): plain msgpack with flax's ext types decoded
  here, so neither jax nor flax is needed.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import torch

__all__ = [
    "UnsafeCheckpointError",
    "flatten_tree",
    "load_flax_msgpack",
    "load_npz",
    "load_state_dict",
]

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint that could only be read by running code from it."""


# -- torch / safetensors ---------------------------------------------------------------------
def load_torch_file(path: str | os.PathLike) -> Any:
    """``torch.load(weights_only=True)`` on CPU; a code-running pickle raises UnsafeCheckpointError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refuses unknown globals with this error
        raise UnsafeCheckpointError(
            f"refused to load {str(path)!r}: it is a pickle that would import or call objects "
            f"other than tensors and plain containers (torch.load(weights_only=True) said: "
            f"{str(e).splitlines()[0]}). avfusion never loads checkpoints with a full unpickler; "
            "convert the file to .safetensors in a trusted environment first."
        ) from None


def _unwrap_state_dict(obj: Any, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    # Training checkpoints often nest the weights one level down.
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "module", "model_state"):
            if isinstance(obj.get(key), dict):
                return _unwrap_state_dict(obj[key], path)
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    raise ValueError(f"{str(path)!r} holds no state dict (a mapping of names to tensors)")


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A flat ``name -> tensor`` state dict from .safetensors, .pth/.pt/.bin/.ckpt or .npz."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {str(p)!r} does not exist")
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p), device="cpu")
    if suffix in TORCH_SUFFIXES:
        return _unwrap_state_dict(load_torch_file(p), p)
    if suffix == ".npz":
        return {k: torch.from_numpy(np.array(v)) for k, v in load_npz(p).items()}
    raise ValueError(
        f"unsupported checkpoint type {suffix!r} for {str(p)!r}: expected .safetensors, "
        f"{', '.join(TORCH_SUFFIXES)} or .npz"
    )


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` (object arrays, which need pickle, are refused)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise UnsafeCheckpointError(
                f"refused to load {str(path)!r}: it holds pickled object arrays, which could run code"
            ) from None
        raise


# -- flax msgpack ----------------------------------------------------------------------------
# flax.serialization's ext type codes.
_EXT_NDARRAY, _EXT_COMPLEX, _EXT_NPSCALAR = 1, 2, 3
_CHUNKED_KEY = "__msgpack_chunked_array__"  # flax splits arrays over 2**30 bytes into chunks


def _decode_ndarray(data: bytes) -> np.ndarray:
    shape, dtype_name, buffer = msgpack.unpackb(data, raw=True)
    name = dtype_name.decode() if isinstance(dtype_name, bytes) else dtype_name
    if name == "bfloat16":
        # numpy has no bfloat16: a bfloat16 is the top half of a float32, so widen it exactly.
        u16 = np.frombuffer(buffer, dtype=np.uint16).astype(np.uint32)
        return (u16 << 16).view(np.float32).reshape(shape)
    return np.frombuffer(buffer, dtype=np.dtype(name)).reshape(shape)


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _EXT_NDARRAY:
        return _decode_ndarray(data)
    if code == _EXT_NPSCALAR:
        return _decode_ndarray(data)[()]
    if code == _EXT_COMPLEX:
        re, im = msgpack.unpackb(data)
        return complex(re, im)
    raise ValueError(f"unknown msgpack ext type {code} (not a flax checkpoint?)")


def _unchunk(tree: Any) -> Any:
    if isinstance(tree, dict):
        if tree.get(_CHUNKED_KEY) is True:
            chunks = tree["chunks"]
            flat = np.concatenate([np.asarray(chunks[str(i)]).ravel() for i in range(len(chunks))])
            return flat.reshape(tree["shape"])
        return {k: _unchunk(v) for k, v in tree.items()}
    return tree


def load_flax_msgpack(path: str | os.PathLike) -> dict[str, Any]:
    """The nested dict a ``flax.serialization.to_bytes`` checkpoint holds (numpy leaves)."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        tree = msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError) as e:
        raise ValueError(f"{str(path)!r} is not a flax msgpack checkpoint: {e}") from None
    if not isinstance(tree, dict):
        raise ValueError(f"{str(path)!r} is not a flax msgpack checkpoint (top level is {type(tree).__name__})")
    return _unchunk(tree)


def flatten_tree(tree: dict[str, Any], sep: str = "/", prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': x}} -> {'a/b': x}."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten_tree(v, sep, key + sep))
        else:
            out[key] = v
    return out
