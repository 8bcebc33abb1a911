"""A process that writes dataset shards while collection goes on.

HDF5 costs about 0.1 ms per dataset created, eight per episode, and holds the
GIL throughout: written in the collecting process it took 13% of a 256-env
collection. Here the parent sends each shard's episodes down a pipe and goes
back to stepping; the child writes `<shard>.tmp`, fsyncs it and answers with its
path; the parent renames it into place and lists it in the index. The child
only ever writes temporaries, so whatever happens to either process, committed
data stays exactly as committed; if the parent dies the pipe closes and the
child exits after its current shard (which no index lists). A shard that cannot
be written (a full disk) is removed, and the parent raises the child's OSError,
which names the file and the problem.

The child runs `python -m sim.data.shard_writer`: a fresh interpreter importing h5py
and numpy only (not torch, not the collecting program), so it starts in ~0.2 s.
Messages are length-prefixed pickles.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import struct
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any, BinaryIO

_HEADER = struct.Struct("<Q")
_ROOT = Path(__file__).resolve().parents[2]  # makes `sim` importable in the child


def _send(stream: BinaryIO, message: Any) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def _receive(stream: BinaryIO) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError
    (size,) = _HEADER.unpack(header)
    payload = stream.read(size)
    if len(payload) < size:
        raise EOFError
    return pickle.loads(payload)


class ShardWriterProcess:
    """Parent side: `submit` shards, then `ready` / `result` in submission order."""

    def __init__(self):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_ROOT), env.get("PYTHONPATH")]))
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "sim.data.shard_writer"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )

    def submit(self, path: Path, episodes: list, env_args: dict, compression: str) -> None:
        try:
            _send(self._proc.stdin, (str(path), episodes, env_args, compression))
        except BrokenPipeError:
            raise RuntimeError(self._failure("stopped before a shard was sent")) from None

    def ready(self) -> bool:
        """Whether an answer is waiting (never blocks)."""
        readable, _, _ = select.select([self._proc.stdout], [], [], 0)
        return bool(readable)

    def result(self) -> str:
        """The path of the next finished shard (blocks until there is one)."""
        try:
            status, detail = _receive(self._proc.stdout)
        except EOFError:
            raise RuntimeError(self._failure("exited without answering")) from None
        if status == "oserror":  # a failed write (a full disk): the child's OSError
            raise OSError(*detail)
        if status != "ok":
            raise RuntimeError(f"dataset shard writer failed: {detail}")
        return detail

    def _failure(self, what: str) -> str:
        code = self._proc.poll()
        return f"dataset shard writer {what} (exit code {code})"

    def close(self) -> None:
        if self._proc.stdin and not self._proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self._proc.stdin.close()  # EOF: the child exits
        try:
            self._proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc.stdout.close()


def main() -> None:
    """Child side: write every shard received until the parent closes the pipe."""
    from sim.data.shards import write_shard

    # Yield the CPU to the collection: the physics threads step in lockstep, so a
    # writer preempting one of them stalls them all; at low priority it runs in
    # the gaps (the parent's Python work between steps) instead.
    with contextlib.suppress(OSError):
        os.nice(10)
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # anything printed must not corrupt the answers
    while True:
        try:
            path, episodes, env_args, compression = _receive(source)
        except EOFError:
            return
        try:
            write_shard(Path(path), episodes, env_args, compression)
            _send(sink, ("ok", path))
        except OSError as err:  # write_shard's: names the file and the problem
            detail = (str(err),) if err.errno is None else (err.errno, err.strerror)
            _send(sink, ("oserror", detail))
            return
        except Exception:  # report it to the parent, which raises it
            _send(sink, ("error", traceback.format_exc()))
            return


if __name__ == "__main__":
    main()
