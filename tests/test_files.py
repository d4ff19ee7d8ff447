from __future__ import annotations

import os
from pathlib import Path

import pytest

from hypernet.errors import InputError
from hypernet.files import atomic_folder, atomic_write, require_absent


def test_atomic_write_replaces_the_file_only_when_the_block_ends(tmp_path: Path) -> None:
    file = tmp_path / "sub" / "cache.json"
    with atomic_write(file) as tmp:
        tmp.write_text("new")
        assert not file.exists() and tmp.parent == file.parent
    assert file.read_text() == "new"
    with atomic_write(file) as tmp:
        tmp.write_text("newer")
        assert file.read_text() == "new"  # readers see the old file until the rename
    assert file.read_text() == "newer"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    file = tmp_path / "cache.json"
    file.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(file) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert file.read_text() == "old"
    assert os.listdir(tmp_path) == ["cache.json"]


def test_writers_of_one_file_never_share_a_temporary(tmp_path: Path) -> None:
    file = tmp_path / "rows.safetensors"
    with atomic_write(file) as a, atomic_write(file) as b:
        assert a != b and not a.exists() and not b.exists()  # free for os.link / save_file
        a.write_text("a")
        b.write_text("b")
    assert file.read_text() == "a"  # the outer block renamed last


def test_written_files_follow_the_umask_not_mkstemps_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "shared.json") as tmp:
            tmp.write_text("{}")
    finally:
        os.umask(old)
    assert (tmp_path / "shared.json").stat().st_mode & 0o777 == 0o644


def test_atomic_folder_appears_whole_and_never_overwrites(tmp_path: Path) -> None:
    out = tmp_path / "ckpt"
    with pytest.raises(ValueError), atomic_folder(out) as tmp:
        (tmp / "model.safetensors").write_bytes(b"x")
        raise ValueError
    assert os.listdir(tmp_path) == []
    with atomic_folder(out) as tmp:
        (tmp / "model.safetensors").write_bytes(b"x")
    assert (out / "model.safetensors").read_bytes() == b"x"
    with pytest.raises(InputError, match="already exists"):
        require_absent(out)
