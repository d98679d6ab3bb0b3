"""dtda.atomic: files and directories get the mode a plain open()/mkdir() would give."""

import os
import stat

from dtda.atomic import atomic_dir, atomic_write_text


def test_modes_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        with atomic_dir(tmp_path / "report") as d:
            (d / "index.html").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "report").stat().st_mode) == 0o750
    assert (tmp_path / "a.json").read_text() == "{}"
