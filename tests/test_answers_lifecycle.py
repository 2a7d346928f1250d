"""Worker processes never outlive the process that started them, even when it dies abruptly mid-comparison."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import os, threading, time
    from harness_plugin.answers.worker import get_pool

    pool = get_pool()
    pool.warm_up()
    print(pool.pids()[0], flush=True)
    slow = ("(x+y+z+1)^{30}", "(x+y+z)^{30}")  # minutes of sympy work
    threading.Thread(target=lambda: pool.compare([slow], 1e-6, 600), daemon=True).start()
    time.sleep(1.0)
    os._exit(0)  # no atexit handlers, no pipe cleanup: the worker must notice on its own
    """
)


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    if Path("/proc/self").exists():
        return status.exists() and "zombie" not in status.read_text()
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_worker_exits_when_its_parent_dies_while_it_is_busy() -> None:
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=root, capture_output=True, text=True, timeout=180, check=True
    )
    pid = int(result.stdout.strip().splitlines()[-1])
    deadline = time.monotonic() + 15
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid), "the orphaned worker kept running"
