"""The `antidistill` command as a user runs it: a version, and one `error:` line (exit 2) for their own mistakes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ANTIDISTILL = [sys.executable, "-m", "harness_plugin.cli"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def _run(*args: str, cwd) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ANTIDISTILL, *args], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=300)


def test_version() -> None:
    from harness_plugin import __version__

    result = subprocess.run([*ANTIDISTILL, "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == f"antidistill {__version__}"


def test_user_errors_are_one_line_and_exit_2(tmp_path, tiny_dir) -> None:
    missing = _run("gradient", "--proxy", str(tiny_dir / "proxy"), "--traces", str(tmp_path / "none.jsonl"),
                   "--output", str(tmp_path / "g"), cwd=tmp_path)
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n{not json\n")
    malformed = _run("gradient", "--proxy", str(tiny_dir / "proxy"), "--traces", str(broken),
                     "--output", str(tmp_path / "g"), cwd=tmp_path)
    for result, names in ((missing, "none.jsonl"), (malformed, "broken.jsonl")):
        assert result.returncode == 2, result.stderr[-2000:]
        lines = [line for line in result.stderr.splitlines() if line.strip() and "Loading weights" not in line]
        assert "Traceback" not in result.stderr and lines[-1].startswith("error:") and names in lines[-1], lines
    assert not (tmp_path / "g").exists()
