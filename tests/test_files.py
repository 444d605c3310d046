"""Atomic file writes: a failed or killed write leaves the previous file, never half of a new one."""

import pytest

from ledit.files import atomic_path, write_json_atomic


def test_atomic_path_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "ckpt.pt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="killed"), atomic_path(target) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


def test_write_json_atomic_replaces_the_file_whole(tmp_path):
    target = tmp_path / "nested" / "results.json"
    write_json_atomic(target, {"a": 1})
    write_json_atomic(target, {"b": [1, 2]})
    assert target.read_text() == '{\n "b": [\n  1,\n  2\n ]\n}\n'
    assert list(target.parent.iterdir()) == [target]
