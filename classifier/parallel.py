"""``fork_map``: an ordered map over this process and forked copies of it.

The engine spreads preprocessing, attributes and a field's segmentation steps with it
(:mod:`classifier.engine`, :mod:`classifier.segmentation`); it works inside Celery's
prefork worker processes, where ``multiprocessing`` refuses to start children. A network
run in a forked child must first set ``torch.set_num_threads(1)``: the parent's OpenMP
pool does not exist in the child, and waiting on it deadlocks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import struct
from collections.abc import Callable, Sequence
from typing import NoReturn, TypeVar

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_R = TypeVar("_R")


def fork_map(fn: Callable[[_T], _R], items: Sequence[_T], workers: int, chunk: int = 8,
             progress: Callable[[int], None] | None = None) -> list[_R]:
    """``[fn(x) for x in items]`` computed by this process and ``workers - 1`` forked
    children, with the same result and the same exception as the loop.

    Why not ``ProcessPoolExecutor``: it is refused inside daemonic processes (Celery's
    prefork pool), it pickles every input to its workers, and the parent sits idle.
    Here the children inherit ``items`` and ``fn`` through fork (nothing is sent to
    them), the parent works too, and chunks of ``chunk`` items are handed out through a
    pipe of 4-byte chunk numbers that every process reads from, so a process that the
    shared machine slows down simply takes fewer chunks. A child pickles its results
    back once, when no chunks are left.

    Anything a child did not deliver -- a chunk whose ``fn`` raised, a child that died
    or could not be forked -- is computed again by the parent in order, so an exception
    is raised here exactly as the loop raises it (the first failing item's). Only the
    parent calls ``progress`` (with an estimate of items done) and touches anything
    outside ``fn``: children leave through ``os._exit``, so inherited database or broker
    connections are never closed or written by them.
    """
    n = len(items)
    chunk = max(1, chunk, -(-n // 4096))  # at most 4,096 chunk numbers: 16 KiB, within a pipe's buffer
    spans = [(a, min(a + chunk, n)) for a in range(0, n, chunk)]
    done: dict[int, list[_R]] = {}
    task_r, task_w = os.pipe()
    try:
        os.write(task_w, b"".join(struct.pack("<I", k) for k in range(len(spans))))
    finally:
        os.close(task_w)  # before forking: the queue ends (EOF) once every number is taken
    children: list[tuple[int, int]] = []  # (pid, read end of its result pipe)
    error: tuple[int, Exception] | None = None  # the parent's own failure: (chunk, exception)
    try:
        for _ in range(max(0, workers - 1)):
            res_r, res_w = os.pipe()
            try:
                pid = os.fork()
            except OSError:
                os.close(res_r)
                os.close(res_w)
                break
            if pid == 0:  # child
                _fork_child(fn, items, spans, task_r, res_w, [r for _, r in children] + [res_r])
            os.close(res_w)
            children.append((pid, res_r))
        while error is None and (k := _next_chunk(task_r)) is not None:
            a, b = spans[k]
            try:
                done[k] = [fn(x) for x in items[a:b]]
            except Exception as err:  # noqa: BLE001 - raised below, once earlier chunks are known good
                error = (k, err)
            if progress is not None:
                progress(min(n - 1, sum(len(v) for v in done.values()) * (len(children) + 1)))
        mine = len(done)
        for _pid, res_r in children:
            done.update(_child_results(res_r))
        # how the work was shared: a child that died or could not fork shows here as 0
        logger.debug("fork_map: %d items in %d chunks; %d forked; parent did %d chunks, children %d",
                     n, len(spans), len(children), mine, len(done) - mine)
    finally:
        os.close(task_r)
        for pid, res_r in children:
            _close_quietly(res_r)
            _reap(pid)
    out: list[_R] = []
    for k, (a, b) in enumerate(spans):
        if error is not None and k == error[0]:
            raise error[1]
        out += done[k] if k in done else [fn(x) for x in items[a:b]]
    if progress is not None:
        progress(n)
    return out


def _next_chunk(task_r: int) -> int | None:
    # a pipe read of 4 bytes is atomic between readers (the writer wrote whole records)
    data = os.read(task_r, 4)
    return struct.unpack("<I", data)[0] if len(data) == 4 else None


def _fork_child(fn: Callable, items: Sequence, spans: list[tuple[int, int]], task_r: int, res_w: int,
                close: list[int]) -> NoReturn:
    """Body of a forked child: take chunks until none are left, send the results, exit."""
    try:
        for fd in close:  # other children's result pipes and our own read end
            os.close(fd)
        # the parent's handlers (e.g. Celery's warm shutdown on SIGTERM) are not ours to run
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_DFL)
        out: dict[int, list] = {}
        while (k := _next_chunk(task_r)) is not None:
            a, b = spans[k]
            try:
                out[k] = [fn(x) for x in items[a:b]]
            except Exception:  # noqa: BLE001 - the parent redoes the chunk and raises
                break
        with os.fdopen(res_w, "wb") as f:
            pickle.dump(out, f, protocol=pickle.HIGHEST_PROTOCOL)
    except BaseException:  # noqa: BLE001 - whatever happens, never return into the parent's code
        pass
    finally:
        os._exit(0)


def _child_results(res_r: int) -> dict[int, list]:
    chunks = []
    while data := os.read(res_r, 1 << 20):
        chunks.append(data)
    try:
        got = pickle.loads(b"".join(chunks)) if chunks else {}
    except Exception:  # noqa: BLE001 - a child killed mid-write: the parent redoes its chunks
        return {}
    return got if isinstance(got, dict) else {}


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):  # already closed by the reader
        os.close(fd)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):  # already reaped by someone else's SIGCHLD handler
        os.waitpid(pid, 0)
