"""Durable writes (utils/files.py): the target holds its old content or the new one, never a
part, and no temporary file is left behind, whether the writer succeeds or fails."""

import json

import pytest

from avfusion.utils.files import atomic_file, atomic_json, atomic_write


class Interrupted(BaseException):
    """Not an Exception: stands in for KeyboardInterrupt / SystemExit in the writer."""


def _names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_atomic_write_replaces_the_content(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"old")
    atomic_write(p, b"new content")
    assert p.read_bytes() == b"new content"
    assert _names(tmp_path) == ["f.bin"]


def test_the_writer_gets_a_temporary_in_the_same_folder_and_the_target_appears_when_it_is_done(tmp_path):
    p = tmp_path / "model.pt2"
    with atomic_file(p, suffix=".pt2") as tmp:
        assert tmp.parent == tmp_path and tmp != p and tmp.name.endswith(".pt2")
        tmp.write_bytes(b"half")
        assert not p.exists()  # nothing at the target while the writer runs
        tmp.write_bytes(b"all of it")
    assert p.read_bytes() == b"all of it"
    assert _names(tmp_path) == ["model.pt2"]


@pytest.mark.parametrize("error", [RuntimeError("writer failed"), Interrupted()])
def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path, error):
    p = tmp_path / "f.txt"
    p.write_text("old")
    with pytest.raises(type(error)):
        with atomic_file(p) as tmp:
            tmp.write_text("part of the new")
            raise error
    assert p.read_text() == "old"
    assert _names(tmp_path) == ["f.txt"]


def test_a_failing_writer_creates_nothing_where_there_was_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_file(tmp_path / "new.txt") as tmp:
            tmp.write_text("part")
            raise RuntimeError("writer failed")
    assert _names(tmp_path) == []


def test_atomic_json_writes_the_object_indented_with_a_final_newline(tmp_path):
    p = tmp_path / "a.json"
    obj = {"b": [1, 2], "a": "x"}
    atomic_json(p, obj)
    assert p.read_text() == json.dumps(obj, indent=1) + "\n"
    atomic_json(p, obj, indent=2)
    assert json.loads(p.read_text()) == obj and p.read_text() == json.dumps(obj, indent=2) + "\n"


def test_atomic_json_of_an_unserialisable_object_leaves_the_old_file(tmp_path):
    p = tmp_path / "a.json"
    p.write_text('{"old": true}\n')
    with pytest.raises(TypeError):
        atomic_json(p, {"x": object()})
    assert p.read_text() == '{"old": true}\n'
    assert _names(tmp_path) == ["a.json"]
