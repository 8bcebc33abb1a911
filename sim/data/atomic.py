"""Atomic file writes: readers see the old file or the new one, never a part; and
JSON files that say when they were damaged.

A write that fails (a full disk, a file size limit) raises an OSError naming the
file and the problem, and leaves the previous file as it was.

`write_json_atomic` adds a last field `"checksum":
"sha256:<hex>"`, the SHA-256 of the rest of the object as compact JSON with sorted
keys; `read_json` checks it (and drops it), so a flipped byte or a cut file is a
ValueError naming the file, never a wrong number. A file without the field reads
unchecked (unless its last field looks like a checksum under a damaged name).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, BinaryIO

CHECKSUM = "checksum"
"""The field of a checksummed JSON object that holds its checksum."""
_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call `write` on a temporary file beside `path`, fsync it, rename it over `path`
    and fsync the directory; on any error the temporary file is removed (and an
    OSError names `path`)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise write_error(path, err) from err
        raise
    fsync_dir(path.parent)


def write_error(path: str | os.PathLike, err: OSError) -> OSError:
    """An OSError of the same errno saying that `path` could not be written, and why
    (a full disk or file size limit said as such)."""
    code = err.errno
    problem = err.strerror or str(err)
    if code in _FULL:
        problem += " (disk full, or over a disk quota or file size limit)"
    return OSError(code, f"{path}: could not be written: {problem}")


def write_bytes_atomic(path: str | os.PathLike, payload: bytes) -> None:
    write_atomic(path, lambda f: f.write(payload))


def fsync_dir(path: Path) -> None:
    """Make renames and new entries in directory `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def json_checksum(payload: dict[str, Any]) -> str:
    """The checksum of a JSON object (without its own checksum field)."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def write_json_atomic(
    path: str | os.PathLike, payload: dict, *, checksum: bool = True, indent: int = 2
) -> None:
    """Write `payload` as indented JSON, atomically, with the field that `read_json`
    checks (unless `checksum` is False: a file for other programs to read)."""
    if checksum:  # of the object as read back (string keys, lists for tuples)
        payload = {k: v for k, v in json.loads(json.dumps(payload)).items() if k != CHECKSUM}
        payload[CHECKSUM] = json_checksum(payload)
    write_bytes_atomic(path, json.dumps(payload, indent=indent).encode())


def read_json(path: str | os.PathLike, *, legacy: Collection[str] | None = None) -> dict[str, Any]:
    """The JSON object in file `path`, its checksum checked and dropped; a ValueError
    naming the file if it is damaged, truncated or not a JSON object. A file without
    a checksum reads unchecked; with `legacy`, only if it holds no other fields than
    those (what such files held before they had a checksum)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        payload = json.loads(path.read_bytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: corrupt or truncated JSON ({err})") from err
    if not isinstance(payload, dict):
        raise ValueError(f"{path}: corrupt: not a JSON object")
    if CHECKSUM not in payload:
        if _damaged_checksum(payload):
            raise ValueError(f"{path}: corrupt: the name of its {CHECKSUM!r} field is damaged")
        unknown = sorted(set(payload) - set(legacy)) if legacy is not None else []
        if unknown:
            raise ValueError(
                f"{path}: corrupt: no {CHECKSUM!r} field, and unknown fields {unknown}"
            )
        return payload
    stored = payload.pop(CHECKSUM)
    if stored != json_checksum(payload):
        raise ValueError(
            f"{path}: corrupt: its content does not match its checksum (the file was "
            "damaged or edited after it was written)"
        )
    return payload


def _damaged_checksum(payload: dict[str, Any]) -> bool:
    """Whether the last field of an object without a checksum field looks like one
    whose name was damaged: a string as long as a checksum, named like one or
    holding a SHA-256."""
    if not payload:
        return False
    key, value = list(payload.items())[-1]
    if not isinstance(value, str) or len(value) < 64:
        return False
    near = len(key) == len(CHECKSUM) and sum(map(str.__ne__, key, CHECKSUM)) <= 3
    return near or value.startswith("sha256:")
