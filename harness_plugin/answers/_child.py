"""Entry point of the symbolic worker process (``python -m harness_plugin.answers._child``).

Protocol: one JSON object per line. The parent sends ``{"id": n, "rel_tol": t, "pairs": [[pred, ref], ...]}``
and reads ``{"id": n, "results": [bool, ...]}``; the child announces ``{"ready": true}`` once sympy and the
grammar are loaded. JSON (not pickle) keeps the channel a plain data format. The real stdout is reserved for
the protocol; anything a library prints goes to stderr. The parent enforces time limits by killing this
process, so nothing here needs signals or threads.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

DEFAULT_MEMORY_MB = 4096


def _limit_memory() -> None:
    """Cap the address space so one runaway comparison fails with MemoryError instead of swapping."""
    try:
        import resource
    except ImportError:  # not POSIX
        return
    megabytes = int(os.environ.get("ANTIDISTILL_ANSWERS_WORKER_MEMORY_MB", DEFAULT_MEMORY_MB))
    if megabytes <= 0:
        return
    limit = megabytes * 1024 * 1024
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ValueError, OSError):
        pass


def _exit_with_parent(interval_s: float = 1.0) -> None:
    """End this worker if its parent dies, even in the middle of a long sympy computation.

    A closed stdin ends the request loop, but only between requests; a watchdog thread (the GIL is released
    every few milliseconds) catches the parent dying while sympy is busy. ``PR_SET_PDEATHSIG`` would not do:
    it fires when the *thread* that started us exits, and workers are often started from short-lived threads.
    """
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, name="answers-worker-watchdog", daemon=True).start()


def _send(channel, message: dict) -> None:
    channel.write(json.dumps(message).encode("utf-8") + b"\n")
    channel.flush()


def main() -> int:
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    _limit_memory()
    _exit_with_parent()

    from harness_plugin.answers import symbolic

    symbolic.warm_up()
    _send(channel, {"ready": True, "pid": os.getpid()})
    for raw in sys.stdin.buffer:
        try:
            request = json.loads(raw)
            rel_tol = float(request["rel_tol"])
            pairs = [(str(pred), str(ref)) for pred, ref in request["pairs"]]
        except (ValueError, KeyError, TypeError):
            _send(channel, {"id": None, "error": "malformed request"})
            continue
        results = []
        for prediction, reference in pairs:
            try:
                results.append(symbolic.equal(prediction, reference, rel_tol))
            except MemoryError:
                results.append(False)
        _send(channel, {"id": request.get("id"), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
