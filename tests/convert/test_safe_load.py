"""Checkpoints are read without running code from them (DESIGN.md section 5)."""

from __future__ import annotations

import pickle
from pathlib import Path

import msgpack
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from avfusion.convert.safe_load import UnsafeCheckpointError, flatten_tree, load_flax_msgpack, load_state_dict
from avfusion.errors import InputError

MARKER = "avfusion_pwned_marker"


def _side_effect(path: str) -> None:  # what a malicious checkpoint would run on load
    Path(path).write_text("code ran")


class Payload:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (_side_effect, (self.path,))


@pytest.mark.parametrize("suffix", [".pth", ".bin", ".pt"])
def test_code_running_pickle_is_refused(tmp_path: Path, suffix: str) -> None:
    marker = tmp_path / MARKER
    ckpt = tmp_path / f"evil{suffix}"
    with open(ckpt, "wb") as f:
        pickle.dump({"weight": torch.zeros(2), "payload": Payload(str(marker))}, f, protocol=2)
    # the file really is malicious: a full unpickler runs the payload
    with open(ckpt, "rb") as f:
        pickle.load(f)
    assert marker.exists()
    marker.unlink()

    with pytest.raises(UnsafeCheckpointError, match="refused to load .*would import or call objects"):
        load_state_dict(ckpt)
    assert not marker.exists(), "the payload ran"


def test_code_running_pickle_is_refused_by_create_model(tmp_path: Path) -> None:
    import avfusion

    marker = tmp_path / MARKER
    ckpt = tmp_path / "vit.pth"
    torch.save({"blocks.0.norm1.weight": torch.ones(64), "x": Payload(str(marker))}, ckpt)
    with pytest.raises(UnsafeCheckpointError):
        avfusion.create_model("mbt_tiny", pretrained_backbone=str(ckpt))
    assert not marker.exists()


def test_weights_only_pickle_loads_and_unwraps(tmp_path: Path) -> None:
    sd = {"a.weight": torch.randn(3, 2), "b": torch.arange(4)}
    torch.save({"model": sd, "epoch": 3}, tmp_path / "ok.pth")
    got = load_state_dict(tmp_path / "ok.pth")
    assert set(got) == set(sd) and all(torch.equal(got[k], sd[k]) for k in sd)


def test_safetensors_and_npz(tmp_path: Path) -> None:
    sd = {"a": torch.randn(3, 2)}
    save_file(sd, tmp_path / "m.safetensors")
    assert torch.equal(load_state_dict(tmp_path / "m.safetensors")["a"], sd["a"])
    np.savez(tmp_path / "w.npz", **{"Transformer/x": np.ones((2, 2), np.float32)})
    assert load_state_dict(tmp_path / "w.npz")["Transformer/x"].shape == (2, 2)


def test_npz_object_array_is_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(UnsafeCheckpointError, match="pickled object arrays"):
        load_state_dict(tmp_path / "obj.npz")


def test_unknown_suffix_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(InputError, match="unsupported checkpoint type"):
        load_state_dict(tmp_path / "w.txt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_state_dict(tmp_path / "nope.pth")
    (tmp_path / "d.pth").mkdir()
    with pytest.raises(IsADirectoryError, match="is a directory"):
        load_state_dict(tmp_path / "d.pth")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        load_flax_msgpack(tmp_path / "d.pth")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".npz", ".msgpack"])
@pytest.mark.parametrize("content", [b"", b"garbage\x00\x01 not a checkpoint", b"PK\x03\x04truncated zip"])
def test_damaged_file_is_an_input_error_naming_it(tmp_path: Path, suffix: str, content: bytes) -> None:
    # Not an UnsafeCheckpointError: bytes that are no pickle at all are damaged, not dangerous.
    p = tmp_path / f"w{suffix}"
    p.write_bytes(content)
    load = load_flax_msgpack if suffix == ".msgpack" else load_state_dict
    with pytest.raises(InputError, match=f"w\\{suffix}") as info:
        load(p)
    assert not isinstance(info.value, UnsafeCheckpointError)
    assert "\n" not in str(info.value)


def test_a_pickle_without_tensors_holds_no_state_dict(tmp_path: Path) -> None:
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(InputError, match="holds no state dict"):
        load_state_dict(tmp_path / "list.pth")


def _ext(a: np.ndarray, dtype_name: str | None = None, raw: bytes | None = None) -> msgpack.ExtType:
    payload = (list(a.shape), dtype_name or a.dtype.name, raw if raw is not None else a.tobytes())
    return msgpack.ExtType(1, msgpack.packb(payload, use_bin_type=True))


def test_flax_msgpack_dtypes_and_chunks(tmp_path: Path) -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    bf16 = (x.view(np.uint32) >> 16).astype(np.uint16)  # truncation = exact bfloat16 values
    chunked = {"__msgpack_chunked_array__": True, "shape": [3, 4],
               "chunks": {"0": _ext(x.ravel()[:5]), "1": _ext(x.ravel()[5:])}}
    tree = {"a": {"f32": _ext(x), "bf16": _ext(x, "bfloat16", bf16.tobytes()), "big": chunked},
            "step": msgpack.ExtType(3, msgpack.packb(([], "int64", np.int64(7).tobytes()), use_bin_type=True))}
    p = tmp_path / "c.msgpack"
    p.write_bytes(msgpack.packb(tree, use_bin_type=True))
    got = load_flax_msgpack(p)
    np.testing.assert_array_equal(got["a"]["f32"], x)
    np.testing.assert_array_equal(got["a"]["big"], x)
    np.testing.assert_array_equal(got["a"]["bf16"], (bf16.astype(np.uint32) << 16).view(np.float32))
    assert np.abs(got["a"]["bf16"] - x).max() < 1e-2 and got["step"] == 7
    assert sorted(flatten_tree(got)) == ["a/bf16", "a/big", "a/f32", "step"]


def test_not_msgpack(tmp_path: Path) -> None:
    (tmp_path / "x.msgpack").write_bytes(b"\xc1\xc1garbage")
    with pytest.raises(InputError, match="not a flax msgpack checkpoint"):
        load_flax_msgpack(tmp_path / "x.msgpack")
