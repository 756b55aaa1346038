"""Training checkpoints: versioned folders, each complete and verified before it counts.

Layout of ``OUT/checkpoints/``::

    step-00000120/          the newest complete checkpoint
        model.safetensors   \\ an avfusion model directory (loadable on its own)
        config.json         /
        extra.safetensors   weights of training-only modules (contrastive projectors), if any
        state.pt            optimizer, scheduler, step, data position, RNG states, history
        manifest.json       written last: the size and sha256 of every file above
    step-00000100/          the previous one (the newest KEEP are kept)
    .tmp-step-00000140/     a save in progress, or one a killed process left: never read
    .trash-step-00000080/   a pruned checkpoint being deleted
    .damaged-step-00000160/ a checkpoint that failed verification on resume, set aside

Saving never touches a complete checkpoint before the new one is complete:

1. every file is written into ``.tmp-step-N/`` and fsynced, ``manifest.json`` last, then the folder;
2. ``.tmp-step-N`` is renamed to ``step-N`` (atomic) and ``checkpoints/`` is fsynced;
3. only then are the older ones beyond the newest KEEP pruned (renamed to ``.trash-*``, deleted).

A kill at any point therefore leaves the previous complete checkpoint in place (before step 2) or
the new one (after it). Resuming takes the newest ``step-*`` folder whose files match its manifest
and load; a damaged one (truncated, garbled, missing files) is set aside and the previous one is
used; if none is usable, resuming fails naming the files. ``state.pt`` is read with
``torch.load(weights_only=True)`` (tensors and plain containers only), weights with safetensors.

``AVFUSION_FAULT=checkpoint:<point>:<n>`` (testing) SIGKILLs the process at ``<point>`` of its
n-th save, one of :data:`FAULT_POINTS`: a real kill, to test that no point loses the run.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import nn

from avfusion.errors import RunError
from avfusion.models.pretrained import CONFIG_NAME, WEIGHTS_NAME, cpu_state, model_files, save_pretrained
from avfusion.utils.files import fsync_dir, write_synced

CHECKPOINTS_DIR = "checkpoints"
STATE_NAME = "state.pt"
EXTRA_NAME = "extra.safetensors"
MANIFEST_NAME = "manifest.json"
KEEP = 2
LEGACY_DIRS = ("checkpoint", ".checkpoint.old")  # the single-folder layout of earlier versions
_STEP_DIR = re.compile(r"step-(\d+)")

FAULT_ENV = "AVFUSION_FAULT"
FAULT_POINTS = ("tmp-created", "weights-written", "state-written", "manifest-written", "renamed", "pruning",
                "done")
_saves_started = 0  # in this process, for fault injection


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


# --------------------------------------------------------------------------- RNG state

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


# --------------------------------------------------------------------------- writing

def nonfinite_tensors(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding NaN or inf."""
    return [k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def _refuse_nonfinite(tensors: dict[str, torch.Tensor], what: str) -> None:
    bad = nonfinite_tensors(tensors)
    if bad:
        raise RunError(f"refusing to write {what}: {len(bad)} weight tensor(s) hold NaN or inf (first: {bad[0]!r}); "
                       "the training diverged (lower optim.lr)")


def write_model_dir(model: nn.Module, directory: str | os.PathLike) -> Path:
    """The final model directory: ``save_pretrained``, never with non-finite weights."""
    _refuse_nonfinite(model.state_dict(), f"the final model to {directory}")
    return save_pretrained(model, directory)


def save_checkpoint(out: str | os.PathLike, model: nn.Module, extra: dict[str, nn.Module],
                    state: dict[str, Any], keep: int = KEEP) -> Path:
    """Write ``OUT/checkpoints/step-N`` (N = ``state["step"]``) by the protocol in the module
    docstring, then prune to the newest ``keep``; returns the new folder."""
    global _saves_started
    _saves_started += 1
    step = int(state["step"])
    root = Path(out) / CHECKPOINTS_DIR
    final = root / checkpoint_name(step)
    what = f"the checkpoint of step {step}"
    _refuse_nonfinite(model.state_dict(), what)  # refused before anything is written
    files = model_files(model)  # a model directory, inside the checkpoint
    extra_state = {k: v for name, m in extra.items() for k, v in cpu_state(m, f"{name}.").items()}
    _refuse_nonfinite(extra_state, what)

    root.mkdir(parents=True, exist_ok=True)
    remove_stale(root)  # left by a killed process: the run lock says none is in use
    tmp = root / f".tmp-{final.name}"
    tmp.mkdir()
    _fault("tmp-created")
    manifest: dict[str, Any] = {"format": 1, "step": step, "files": {}}

    def put(name: str, data: bytes) -> None:
        write_synced(tmp / name, data)
        manifest["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    for name, data in files.items():
        put(name, data)
    if extra_state:
        put(EXTRA_NAME, safetensors.torch.save(extra_state))
    _fault("weights-written")
    buf = io.BytesIO()
    torch.save(state, buf)
    put(STATE_NAME, buf.getvalue())
    _fault("state-written")
    write_synced(tmp / MANIFEST_NAME, (json.dumps(manifest, indent=1) + "\n").encode())
    fsync_dir(tmp)
    _fault("manifest-written")
    if final.exists():  # a damaged leftover of the same step (resume sets those aside; belt and braces)
        _discard(final)
    os.rename(tmp, final)
    fsync_dir(root)
    _fault("renamed")
    _prune(Path(out), root, step, keep)
    _fault("done")
    return final


def _prune(out: Path, root: Path, step: int, keep: int) -> None:
    """Delete the complete checkpoints older than the newest ``keep`` (the new one, at ``step``,
    counts), and the old single-folder layout; only ever after the new one is in place."""
    older = [p for s, p in _step_dirs(root) if s < step]
    for p in older[keep - 1:]:
        trash = root / f".trash-{p.name}"
        os.rename(p, trash)  # atomic: a half-deleted folder is never taken for a checkpoint
        _fault("pruning")
        shutil.rmtree(trash)
    for name in LEGACY_DIRS:
        if (out / name).is_dir():
            shutil.rmtree(out / name)


def remove_stale(root: Path) -> None:
    """Remove unfinished saves and half-deleted checkpoints (call only while holding the run lock)."""
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith((".tmp-", ".trash-")):
                _discard(p)


def _discard(path: Path) -> None:
    """Delete a folder, first renaming it to ``.trash-*`` so that a kill midway leaves no half folder
    under a name that is ever read."""
    if not path.name.startswith(".trash-"):
        trash = path.with_name(f".trash-{path.name.lstrip('.')}")
        if trash.exists():
            shutil.rmtree(trash)
        os.rename(path, trash)
        path = trash
    shutil.rmtree(path)


def _fault(point: str) -> None:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    kind, _, rest = spec.partition(":")
    where, _, nth = rest.partition(":")
    if kind != "checkpoint":
        return
    if where not in FAULT_POINTS:  # a typo would make a fault test pass without testing anything
        raise ValueError(f"{FAULT_ENV}={spec!r}: unknown point {where!r}; valid: {FAULT_POINTS}")
    if where == point and int(nth or 1) == _saves_started:
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


# --------------------------------------------------------------------------- reading

class DamagedCheckpoint(Exception):
    """A checkpoint folder that cannot be used; the message names the file and what is wrong."""


@dataclass
class Checkpoint:
    path: Path
    step: int
    state: dict[str, Any]  # state.pt
    weights: dict[str, torch.Tensor]  # model.safetensors
    extra: dict[str, torch.Tensor]  # extra.safetensors ("name.key" -> tensor), or empty

    def load_into(self, model: nn.Module, extra: dict[str, nn.Module]) -> None:
        try:
            model.load_state_dict(self.weights, strict=True)
            for name, m in extra.items():
                m.load_state_dict({k[len(name) + 1:]: v for k, v in self.extra.items() if k.startswith(name + ".")},
                                  strict=True)
        except RuntimeError as e:
            raise RunError(f"the checkpoint {self.path} does not fit the model built from this config "
                           f"({str(e).splitlines()[0]}); use a new --out") from None


def _step_dirs(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoint folders, newest first (temporary and set-aside ones start with a dot)."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.fullmatch(p.name)) and p.is_dir()]
    return sorted(found, reverse=True)


def candidates(out: str | os.PathLike) -> list[Path]:
    """Checkpoint folders to try, newest first; the old single-folder layout only when there is
    no versioned one."""
    out = Path(out)
    dirs = [p for _, p in _step_dirs(out / CHECKPOINTS_DIR)]
    return dirs or [out / name for name in LEGACY_DIRS if (out / name).is_dir()]


def read_checkpoint(path: Path) -> Checkpoint:
    """Verify ``path`` against its manifest and load it; raise DamagedCheckpoint naming the file."""
    if path.name in LEGACY_DIRS:
        names = [n for n in (WEIGHTS_NAME, CONFIG_NAME, STATE_NAME, EXTRA_NAME)
                 if n != EXTRA_NAME or (path / n).is_file()]
        expected: dict[str, dict[str, Any]] = {n: {} for n in names}
    else:
        expected = _read_manifest(path)
    blobs: dict[str, bytes] = {}
    for name, meta in expected.items():
        f = path / name
        try:
            data = f.read_bytes()
        except FileNotFoundError:
            raise DamagedCheckpoint(f"{f} is missing") from None
        if "size" in meta and len(data) != meta["size"]:
            raise DamagedCheckpoint(f"{f} has {len(data)} bytes where {meta['size']} were written (truncated)")
        if "sha256" in meta and hashlib.sha256(data).hexdigest() != meta["sha256"]:
            raise DamagedCheckpoint(f"{f} does not match the checksum written with it (corrupted)")
        blobs[name] = data
    weights = _load_safetensors(path / WEIGHTS_NAME, blobs[WEIGHTS_NAME])
    extra = _load_safetensors(path / EXTRA_NAME, blobs[EXTRA_NAME]) if EXTRA_NAME in blobs else {}
    try:
        state = torch.load(io.BytesIO(blobs[STATE_NAME]), map_location="cpu", weights_only=True)
        step = int(state["step"])
    except Exception as e:  # a damaged pickle can fail in many ways; none of them is a bug here
        raise DamagedCheckpoint(f"{path / STATE_NAME} cannot be read ({type(e).__name__}: "
                                f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    bad = nonfinite_tensors(weights) + nonfinite_tensors(extra)
    if bad:
        raise DamagedCheckpoint(f"{path / WEIGHTS_NAME} holds non-finite weights ({len(bad)} tensor(s))")
    return Checkpoint(path, step, state, weights, extra)


def _read_manifest(path: Path) -> dict[str, dict[str, Any]]:
    f = path / MANIFEST_NAME
    try:
        manifest = json.loads(f.read_bytes())
        files = manifest["files"]
        ok = all(isinstance(v, dict) and isinstance(v.get("size"), int) and isinstance(v.get("sha256"), str)
                 for v in files.values())
    except FileNotFoundError:
        raise DamagedCheckpoint(f"{f} is missing") from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise DamagedCheckpoint(f"{f} is not a valid manifest") from None
    missing = [n for n in (WEIGHTS_NAME, CONFIG_NAME, STATE_NAME) if n not in files]
    if not ok or missing:
        raise DamagedCheckpoint(f"{f} is not a valid manifest")
    return files


def _load_safetensors(f: Path, data: bytes) -> dict[str, torch.Tensor]:
    try:
        return safetensors.torch.load(data)
    except Exception as e:  # safetensors raises its own error type for a malformed file
        raise DamagedCheckpoint(f"{f} cannot be read ({str(e).splitlines()[0][:200]})") from None


def load_latest(out: str | os.PathLike) -> tuple[Checkpoint | None, list[tuple[Path, str]]]:
    """The newest usable checkpoint in ``OUT`` (None if there is none at all) and the newer
    damaged ones as (folder, why). Raises RunError naming the files when none is usable."""
    damaged: list[tuple[Path, str]] = []
    for path in candidates(out):
        try:
            return read_checkpoint(path), damaged
        except DamagedCheckpoint as e:
            damaged.append((path, str(e)))
    if damaged:
        root = Path(out) / CHECKPOINTS_DIR
        raise RunError(f"no usable checkpoint in {out}: " + "; ".join(why for _, why in damaged)
                       + f"; move {root if root.is_dir() else out} away to start the run over")
    return None, []


def find_checkpoint(out: str | os.PathLike) -> Path | None:
    """The folder of the newest usable checkpoint in ``OUT``, or None."""
    for path in candidates(out):
        try:
            read_checkpoint(path)
            return path
        except DamagedCheckpoint:
            continue
    return None


def set_aside(path: Path) -> Path:
    """Move a damaged checkpoint out of the way (kept for inspection, never read again)."""
    dest = path.with_name(f".damaged-{path.name.lstrip('.')}")
    if dest.exists():
        shutil.rmtree(dest)
    os.rename(path, dest)
    fsync_dir(path.parent)
    return dest
