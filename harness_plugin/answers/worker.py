"""Hard wall-clock limits for symbolic comparisons: a small pool of worker processes, killed on timeout.

``signal.alarm`` (what math-verify and lm-eval's minerva checker use) only works in the main thread, and a
thread cannot be interrupted inside sympy. A separate process can always be killed. Workers are ordinary
isolated ``python -I`` subprocesses running ``harness_plugin.answers._child`` (no multiprocessing, so no re-import
of the caller's ``__main__`` and no fork of a threaded parent), talk JSON lines over pipes, all start together on
first use (or at ``warm_up``), are replaced as soon as one is killed, and are terminated at interpreter exit. The pool is thread-safe: each call
checks a worker out for its exclusive use. After a ``fork`` the child process builds its own pool.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

STARTUP_TIMEOUT_S = 120.0  # importing sympy on a loaded machine; the per-call limit starts once a worker is ready
DEFAULT_WORKERS = 2


class WorkerError(Exception):
    """A comparison could not be completed (timeout, crash, no worker); the answer is then not equivalent."""


class WorkerStartupError(RuntimeError):
    """The symbolic worker cannot start at all: a broken installation must fail loudly, not score 0."""


class _Worker:
    """One child process plus a reader thread that turns its stdout into a queue of lines."""

    _ids = itertools.count()

    def __init__(self) -> None:
        here = Path(__file__).resolve().parent
        root = str(here.parents[1])
        bootstrap = (
            f"import sys; sys.path.append({root!r}); "
            "from harness_plugin.answers._child import main; sys.exit(main())"
        )
        try:
            # Isolated (-I: no current directory or user site on sys.path, no PYTHON* variables) and started in
            # the package's own folder: nothing in the caller's folder can be imported in place of a library.
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-c", bootstrap],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                close_fds=True,
                cwd=here,
            )
        except OSError as error:
            raise WorkerStartupError(f"cannot start the answer-checker worker with {sys.executable!r}: {error}") from error
        self._lines: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._stderr_tail = b""
        threading.Thread(target=self._read, name="answers-worker-reader", daemon=True).start()
        threading.Thread(target=self._drain_stderr, name="answers-worker-stderr", daemon=True).start()
        self.ready = False

    def _drain_stderr(self) -> None:
        """Keep the last few KB of the child's stderr for error messages (and never let the pipe fill up)."""
        stderr = self.process.stderr
        assert stderr is not None
        debug = os.environ.get("ANTIDISTILL_ANSWERS_DEBUG") == "1"
        try:
            for line in stderr:
                self._stderr_tail = (self._stderr_tail + line)[-4096:]
                if debug:
                    sys.stderr.write(line.decode("utf-8", "replace"))
        except (OSError, ValueError):
            pass

    def _read(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        try:
            for line in stdout:
                self._lines.put(line)
        except (OSError, ValueError):
            pass
        self._lines.put(None)

    def _receive(self, deadline: float) -> dict:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WorkerError("timed out")
        try:
            line = self._lines.get(timeout=remaining)
        except queue.Empty:
            raise WorkerError("timed out") from None
        if line is None:
            raise WorkerError("worker exited")
        try:
            message = json.loads(line)
        except ValueError as error:
            raise WorkerError("malformed reply") from error
        if not isinstance(message, dict):
            raise WorkerError("malformed reply")
        return message

    def wait_ready(self, timeout: float) -> None:
        """Block until the child has loaded sympy and the grammar; a child that dies or hangs here is fatal."""
        if self.ready:
            return
        try:
            message = self._receive(time.monotonic() + timeout)
        except WorkerError as error:
            self.kill()
            tail = self._stderr_tail.decode("utf-8", "replace").strip()
            raise WorkerStartupError(
                f"the answer-checker worker did not start ({error}). Check that latex2sympy2_extended and "
                f"math-verify import in {sys.executable}; the worker said:\n{tail or '(nothing)'}"
            ) from error
        if not message.get("ready"):
            raise WorkerStartupError(f"the answer-checker worker sent {message!r} instead of its ready message")
        self.ready = True

    def call(self, pairs: Sequence[tuple[str, str]], rel_tol: float, deadline: float) -> list[bool]:
        request_id = next(self._ids)
        payload = json.dumps({"id": request_id, "rel_tol": rel_tol, "pairs": [list(pair) for pair in pairs]})
        stdin = self.process.stdin
        assert stdin is not None
        try:
            stdin.write(payload.encode("utf-8") + b"\n")
            stdin.flush()
        except (OSError, ValueError) as error:
            raise WorkerError("worker pipe closed") from error
        while True:
            message = self._receive(deadline)
            if message.get("id") == request_id:
                results = message.get("results")
                if not isinstance(results, list) or len(results) != len(pairs):
                    raise WorkerError("malformed reply")
                return [result is True for result in results]

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.process.kill()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)


class WorkerPool:
    """``size`` workers, all started at once; a call borrows a ready one within its deadline.

    Why a deadline that covers the wait: under load (8 threads, 2 workers) a limit that only timed the
    computation let calls queue for 100 s. A call now gets one deadline (its ``timeout``) for waiting for a ready
    worker and for the computation; a call that cannot get a worker in time gives up (``WorkerError``), and the
    caller reports the comparison as undecided. Only the pool's first start-up is outside the deadline: until one
    worker has loaded sympy, a call waits up to ``STARTUP_TIMEOUT_S`` for it (``warm_up`` starts it early). A
    killed worker is replaced at once, in the background, so the other workers keep serving meanwhile.
    """

    def __init__(self, size: int = DEFAULT_WORKERS) -> None:
        if size < 1:
            raise ValueError(f"the answer-checker pool needs at least one worker, got {size}")
        self.size = size
        self._ready = threading.Condition()
        self._idle: list[_Worker] = []
        self._all: list[_Worker] = []
        self._starting = 0
        self._warm = False  # a worker has been ready at least once
        self._startup_error: WorkerStartupError | None = None
        self._closed = False
        self.timeouts = 0

    def _fill(self) -> None:
        """Start workers until ``size`` exist (caller holds the condition); each loads in its own thread."""
        while not self._closed and len(self._all) < self.size:
            worker = _Worker()
            self._all.append(worker)
            self._starting += 1
            threading.Thread(target=self._load, args=(worker,), name="answers-worker-start", daemon=True).start()

    def _load(self, worker: _Worker) -> None:
        error: WorkerStartupError | None = None
        try:
            worker.wait_ready(STARTUP_TIMEOUT_S)
        except WorkerStartupError as failure:
            error = failure
        with self._ready:
            self._starting -= 1
            if error is not None or self._closed or worker not in self._all:
                if worker in self._all:
                    self._all.remove(worker)
                if error is not None:
                    self._startup_error = error
                worker.kill()
            else:
                self._warm = True
                self._idle.append(worker)
            self._ready.notify_all()

    def _checkout(self, timeout: float) -> tuple[_Worker, float]:
        """A ready worker and the call's deadline (``timeout`` from now, or from when the pool first came up)."""
        deadline = time.monotonic() + timeout
        with self._ready:
            if self._closed:
                raise WorkerError("the answer-checker pool is closed")
            self._fill()
            cold = not self._warm
            startup_deadline = time.monotonic() + STARTUP_TIMEOUT_S
            while True:
                for worker in [w for w in self._idle if not w.alive()]:
                    self._idle.remove(worker)
                    self._all.remove(worker)
                    self._fill()
                if self._idle:
                    worker = self._idle.pop()
                    if cold:  # the pool's first start-up is not the comparison's time
                        deadline = max(deadline, time.monotonic() + timeout)
                    return worker, deadline
                if self._closed:
                    raise WorkerError("the answer-checker pool is closed")
                if not self._warm:
                    if self._startup_error is not None and self._starting == 0:
                        raise self._startup_error
                    wait = startup_deadline - time.monotonic()
                    if wait <= 0:
                        raise WorkerStartupError(
                            f"no answer-checker worker became ready within {STARTUP_TIMEOUT_S:.0f} s"
                        )
                else:
                    wait = deadline - time.monotonic()
                    if wait <= 0:
                        raise WorkerError("no free worker in time")
                self._ready.wait(wait)

    def _return(self, worker: _Worker) -> None:
        with self._ready:
            if self._closed or worker not in self._all:
                worker.kill()
                return
            self._idle.append(worker)
            self._ready.notify()

    def _discard(self, worker: _Worker) -> None:
        worker.kill()
        with self._ready:
            if worker in self._all:
                self._all.remove(worker)
            self._fill()  # the replacement loads now, so a later call finds it ready

    def compare(self, pairs: Sequence[tuple[str, str]], rel_tol: float, timeout: float) -> list[bool]:
        """Symbolic results for ``pairs`` (prediction, reference); raises WorkerError past ``timeout``."""
        worker, deadline = self._checkout(timeout)
        try:
            results = worker.call(pairs, rel_tol, deadline)
        except WorkerError:
            with self._ready:
                self.timeouts += 1
            self._discard(worker)
            raise
        self._return(worker)
        return results

    def warm_up(self, wait: bool = True) -> None:
        """Start the workers now (optional: the first call starts them); ``wait`` blocks until one is ready."""
        if wait:
            self.compare([("1", "1")], 1e-6, STARTUP_TIMEOUT_S)
            return
        with self._ready:
            self._fill()

    def close(self) -> None:
        with self._ready:
            self._closed = True
            workers = list(self._all)
            self._all.clear()
            self._idle.clear()
            self._ready.notify_all()
        for worker in workers:
            worker.kill()

    def pids(self) -> list[int]:
        with self._ready:
            return [worker.process.pid for worker in self._all]


_POOL: WorkerPool | None = None
_POOL_PID: int | None = None
_POOL_LOCK = threading.Lock()


def get_pool() -> WorkerPool:
    """The process-wide pool, created on first use (and re-created in a forked child)."""
    global _POOL, _POOL_PID
    with _POOL_LOCK:
        if _POOL is None or os.getpid() != _POOL_PID:
            setting = os.environ.get("ANTIDISTILL_ANSWERS_WORKERS", str(DEFAULT_WORKERS))
            try:
                size = int(setting)
            except ValueError:
                raise ValueError(f"ANTIDISTILL_ANSWERS_WORKERS must be a positive integer, got {setting!r}") from None
            _POOL = WorkerPool(size)
            _POOL_PID = os.getpid()
        return _POOL


def shutdown() -> None:
    """Terminate every worker of this process (also registered with atexit)."""
    global _POOL
    with _POOL_LOCK:
        pool, _POOL = _POOL, None
    if pool is not None and os.getpid() == _POOL_PID:
        pool.close()


atexit.register(shutdown)
