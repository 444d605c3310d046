"""Experiment folders: ``<results-dir>/NNN-<model>/`` with ``checkpoints/<step>.pt`` and ``log.jsonl``.

A new run takes the next index above the largest one in use, and creates its folder with ``exist_ok=False``: it
never writes into an existing experiment (only ``--resume`` does that). A run that fails before writing anything
removes its folder again, so failed starts leave no empty folders. A resumed run first removes what a killed run
left behind: temporaries of checkpoint writes it did not finish, and the ``log.jsonl`` lines of steps after the
checkpoint (the resumed run redoes those steps and logs them again).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from ledit.files import atomic_path, remove_stale_temporaries

logger = logging.getLogger("ledit.train")

CHECKPOINTS = "checkpoints"
LOG_NAME = "log.jsonl"
_INDEXED = re.compile(r"(\d+)-")


def claim_experiment_dir(results_dir: str, model_name: str) -> Path:
    """Create and return ``<results_dir>/NNN-<model>``, NNN one above the largest index in use (other folders,
    such as ``notes/``, do not count). Creating the folder claims the index: two runs started at once get two."""
    root = Path(results_dir)
    root.mkdir(parents=True, exist_ok=True)
    used = [int(m.group(1)) for p in root.iterdir() if p.is_dir() and (m := _INDEXED.match(p.name))]
    index = max(used, default=-1) + 1
    while True:
        path = root / f"{index:03d}-{model_name.replace('/', '-')}"
        try:
            path.mkdir()
        except FileExistsError:  # another run claimed it first
            index += 1
            continue
        (path / CHECKPOINTS).mkdir()
        return path


def remove_if_unused(exp_dir: Path) -> bool:
    """Remove a new experiment folder that holds nothing (no checkpoint, no log): what a run that failed before
    its first log line or checkpoint leaves. Returns whether it was removed. Never removes a file."""
    try:
        (exp_dir / CHECKPOINTS).rmdir()
        exp_dir.rmdir()
    except OSError:  # not empty (or already gone): keep it
        return False
    return True


def resolve_resume(path: str) -> Path:
    """The checkpoint --resume names: the file itself, or an experiment folder's latest checkpoint."""
    path = Path(path)
    if path.is_dir():
        found = sorted((path / CHECKPOINTS).glob("*.pt")) if (path / CHECKPOINTS).is_dir() else []
        if not found:
            raise FileNotFoundError(f"--resume {str(path)!r}: no {CHECKPOINTS}/*.pt in that experiment folder")
        return found[-1]
    if not path.is_file():
        raise FileNotFoundError(f"--resume {str(path)!r} does not exist")
    return path


def experiment_of(checkpoint: Path) -> Path:
    """The experiment folder a checkpoint file belongs to (``<exp>/checkpoints/<step>.pt``)."""
    return checkpoint.parent.parent


def tidy_for_resume(exp_dir: Path, step: int) -> None:
    """Before a run resumes at `step`: remove the temporaries of checkpoint writes a killed run did not finish,
    and the log lines of steps after `step` (including a line cut off mid-write)."""
    for tmp in remove_stale_temporaries(exp_dir / CHECKPOINTS):
        logger.info("removed %s, a checkpoint write that a killed run did not finish", tmp)
    log = exp_dir / LOG_NAME
    if not log.is_file():
        return
    lines = log.read_text().splitlines(keepends=True)
    kept = [line for line in lines if _logged_step(line) is not None and _logged_step(line) <= step]
    if len(kept) != len(lines):
        with atomic_path(log) as tmp:
            tmp.write_text("".join(kept))
        logger.info("%s: dropped %d lines after step %d (the resumed run redoes those steps)", log,
                    len(lines) - len(kept), step)


def _logged_step(line: str) -> int | None:
    """The step of a complete log.jsonl line, or None for a line cut off mid-write."""
    if not line.endswith("\n"):
        return None
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None
