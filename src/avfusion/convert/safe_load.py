"""Read checkpoint files without ever running code from them (DESIGN.md section 5).

- ``.safetensors``: safetensors (no code by construction);
- ``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt``: ``torch.load(weights_only=True)``; a pickle that
  names anything beyond tensors and plain containers is refused with :class:`UnsafeCheckpointError`;
- ``.npz``: ``numpy.load(allow_pickle=False)``;
- ``.msgpack`` (flax ``serialization.to_bytes``): plain msgpack with flax's ext types decoded
  here, so neither jax nor flax is needed.

A file that is missing or a directory raises FileNotFoundError / IsADirectoryError (OSError,
like any unreadable file); one that exists but is not a checkpoint of its kind raises
:class:`~avfusion.errors.InputError` naming the file, whatever the parser underneath said.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import torch

from avfusion.errors import InputError

__all__ = [
    "UnsafeCheckpointError",
    "flatten_tree",
    "load_flax_msgpack",
    "load_npz",
    "load_state_dict",
]

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


class UnsafeCheckpointError(InputError, RuntimeError):
    """A checkpoint that could only be read by running code from it (a RuntimeError too, as before)."""


def checkpoint_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path if it is a file; FileNotFoundError / IsADirectoryError naming it if not."""
    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(f"checkpoint {str(p)!r} is a directory, not a file")
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {str(p)!r} does not exist")
    return p


def _unreadable(path: str | os.PathLike, kind: str, e: BaseException) -> InputError:
    first = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
    return InputError(f"{str(path)!r} is not a readable {kind} ({type(e).__name__}: {first[:200]})")


# -- torch / safetensors ---------------------------------------------------------------------
def load_torch_file(path: str | os.PathLike) -> Any:
    """``torch.load(weights_only=True)`` on CPU; a code-running pickle raises UnsafeCheckpointError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except pickle.UnpicklingError as e:
        # weights_only refuses unknown globals with this error ("Unsupported global: GLOBAL x.y"),
        # and also bytes that are no pickle at all ("Unsupported operand 103"): only the first is unsafe.
        if "global" not in str(e).lower():
            raise _unreadable(path, "PyTorch checkpoint", e) from None
        raise UnsafeCheckpointError(
            f"refused to load {str(path)!r}: it is a pickle that would import or call objects "
            f"other than tensors and plain containers (torch.load(weights_only=True) said: "
            f"{str(e).splitlines()[0]}). avfusion never loads checkpoints with a full unpickler; "
            "convert the file to .safetensors in a trusted environment first."
        ) from None
    except Exception as e:  # torch's parser on a damaged or foreign file fails in many ways: all the file's
        raise _unreadable(path, "PyTorch checkpoint", e) from None


def _unwrap_state_dict(obj: Any, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    # Training checkpoints often nest the weights one level down.
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "module", "model_state"):
            if isinstance(obj.get(key), dict):
                return _unwrap_state_dict(obj[key], path)
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    raise InputError(f"{str(path)!r} holds no state dict (a mapping of names to tensors)")


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A flat ``name -> tensor`` state dict from .safetensors, .pth/.pt/.bin/.ckpt or .npz."""
    p = checkpoint_file(path)
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(p), device="cpu")
        except SafetensorError as e:
            raise _unreadable(p, "safetensors file", e) from None
    if suffix in TORCH_SUFFIXES:
        return _unwrap_state_dict(load_torch_file(p), p)
    if suffix == ".npz":
        return {k: torch.from_numpy(np.array(v)) for k, v in load_npz(p).items()}
    raise InputError(
        f"unsupported checkpoint type {suffix!r} for {str(p)!r}: expected .safetensors, "
        f"{', '.join(TORCH_SUFFIXES)} or .npz"
    )


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` (object arrays, which need pickle, are refused)."""
    p = checkpoint_file(path)
    with open(p, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":  # np.load would take any other bytes for a pickle and refuse them as one
        raise InputError(f"{str(p)!r} is not an .npz archive (no zip header)")
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except OSError:
        raise
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise UnsafeCheckpointError(
                f"refused to load {str(p)!r}: it holds pickled object arrays, which could run code"
            ) from None
        raise _unreadable(p, ".npz archive", e) from None
    except Exception as e:  # a damaged zip (BadZipFile, EOFError, ...)
        raise _unreadable(p, ".npz archive", e) from None


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
    with open(checkpoint_file(path), "rb") as f:
        data = f.read()
    try:
        tree = msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)
    except (msgpack.UnpackException, ValueError, TypeError) as e:  # TypeError: e.g. an unhashable map key
        raise InputError(f"{str(path)!r} is not a flax msgpack checkpoint: {e}") from None
    if not isinstance(tree, dict):
        raise InputError(f"{str(path)!r} is not a flax msgpack checkpoint (top level is {type(tree).__name__})")
    try:
        return _unchunk(tree)
    except (KeyError, TypeError, ValueError) as e:  # a chunked-array record without its chunks or shape
        raise InputError(f"{str(path)!r} is not a flax msgpack checkpoint: a damaged chunked array ({e!r})") from None


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
