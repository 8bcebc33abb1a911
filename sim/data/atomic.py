"""Atomic file writes: readers see the old file or the new one, never a part."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call `write` on a temporary file beside `path`, fsync it, rename it over `path`
    and fsync the directory; on any error the temporary file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_bytes_atomic(path: str | os.PathLike, payload: bytes) -> None:
    write_atomic(path, lambda f: f.write(payload))


def fsync_dir(path: Path) -> None:
    """Make renames and new entries in directory `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: str | os.PathLike, payload: dict) -> None:
    """Write `payload` as indented JSON, atomically."""
    write_bytes_atomic(path, json.dumps(payload, indent=2).encode())
