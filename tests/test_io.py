"""harness_plugin.io: atomic writes keep the user's umask (temporary files are created private)."""

from __future__ import annotations

import os
import stat

import pytest

from harness_plugin.io import atomic_directory, atomic_write_text, current_umask


@pytest.mark.parametrize(("umask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700),
                                                              (0o002, 0o664, 0o775)])
def test_outputs_get_the_mode_a_plain_open_would_give(tmp_path, umask, file_mode, dir_mode) -> None:
    old = os.umask(umask)
    try:
        assert current_umask() == umask
        written = atomic_write_text(tmp_path / "a.json", "{}")
        with atomic_directory(tmp_path / "folder") as work:
            atomic_write_text(work / "inside.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(written.stat().st_mode) == file_mode
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == dir_mode
    assert stat.S_IMODE((tmp_path / "folder" / "inside.txt").stat().st_mode) == file_mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "folder"]  # no temporary left behind


def test_a_failed_write_leaves_the_old_file(tmp_path) -> None:
    target = atomic_write_text(tmp_path / "a.txt", "old")

    with pytest.raises(TypeError):
        atomic_write_text(target, 42)  # type: ignore[arg-type]
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]
