"""Atomic file writes: a killed process leaves either the old file or the new one, never half of one; and the
clean-up of the temporaries such a killed writer leaves behind."""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

# The temporary beside a file being written: ".<name>.tmp-<pid of the writer>".
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.tmp-(?P<pid>\d+)")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path`; on success it is fsynced and renamed onto `path` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1) + "\n")


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporaries that ``atomic_path`` left in `folder` when its process was killed mid-write (a
    checkpoint's can be gigabytes), and return their paths. A temporary whose writer is still running on this
    machine is kept."""
    removed = []
    folder = Path(folder)
    for tmp in sorted(folder.iterdir()) if folder.is_dir() else []:
        match = _TEMPORARY.fullmatch(tmp.name)
        if match and tmp.is_file() and not _running(int(match.group("pid"))):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
