"""Which command made a directory: a marker file inside it, so that a command
replaces, resumes into or deletes only directories it made itself, never a user's.

A command `claim`s its output directory when it starts: an empty or missing
directory becomes its own; one it made before (the same marker) stays its own; any
other is refused with a `ValueError` naming the path and what is in the way.
"""

from __future__ import annotations

import os
from pathlib import Path

from sim.data.atomic import read_json, write_json_atomic

MARKER = ".wam-sandbox.json"


def made_by(path: str | os.PathLike) -> str | None:
    """The command that made directory `path` (its marker says), or None."""
    try:
        return read_json(Path(path) / MARKER).get("made_by")
    except (OSError, ValueError):  # missing, damaged or unreadable: not known to be ours
        return None


def is_empty(path: str | os.PathLike) -> bool:
    """Whether `path` is missing or an empty directory."""
    path = Path(path)
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def claim(path: str | os.PathLike, command: str, flag: str = "--out") -> Path:
    """Make `path` the output directory of `command` (created if missing and marked),
    or raise a ValueError if it holds anything `command` did not make."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path}: is a file, not a directory")
    if not is_empty(path) and made_by(path) != command:
        raise ValueError(
            f"{flag} {path}: holds files that `{command}` did not write; refusing to write "
            "into it (choose another, or an empty, directory)"
        )
    mark(path, command)
    return path


def mark(path: str | os.PathLike, command: str) -> None:
    """Mark directory `path` (created if missing) as made by `command`."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if made_by(path) != command:
        write_json_atomic(path / MARKER, {"made_by": command})
