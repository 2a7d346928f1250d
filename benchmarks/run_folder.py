"""The run folder (`--output`): what may be written there, by whom, and with which settings.

Why a module of its own: a run folder holds hours of work and sits in a user's file system. A rerun must resume
the same experiment, never mix results of two configurations under one name; a second process must not clean up
the first one's live files; and nothing the program did not create (a user's `.git`, `.env`, an unrelated folder
given as output by mistake) may be touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from .config import BenchConfig, ConfigError

CONFIG_NAME = "config.yaml"
# What the settings do not name but the results depend on: the toy world's content hash (its code, preset and
# library versions). Written with the run's first stage, compared on every resumption.
WORLD_NAME = "world.json"
LOCK_NAME = ".antidistill-run.lock"
# Settings that may change between a run and its resumption: they say where results are recorded, not what
# they are.
RESUMABLE_KEYS = ("tracking",)
# Settings whose change extends a run rather than redefining it: extra students at the endpoint's points, or the
# curves of another Δ method, only add stages (and G is read again); every existing result keeps its meaning.
EXTENDING_KEYS = ("distill.endpoint_seeds", "grid.extra_penalties")
# The temporary names this program creates (harness_plugin.io and benchmarks.distill): only these are leftovers.
_LEFTOVER = re.compile(r"^\.(?:.+\.[A-Za-z0-9_]{8}\.tmp|.+\.old-\d+|student(?:-seed\d+)?-[A-Za-z0-9_]{8})$")


class RunFolderError(ConfigError):
    """The output folder cannot take this run (not a run folder, other settings, or in use)."""


def check_output(output: Path, config: BenchConfig) -> None:
    """Refuse, before any work, a folder that is not ours or that holds a run with other settings."""
    if output.exists() and not output.is_dir():
        raise RunFolderError(f"--output {output} exists and is not a folder: give a new or empty folder")
    ours = {entry for entry in leftovers(output)} | {output / LOCK_NAME}
    if not output.is_dir() or all(entry in ours for entry in output.iterdir()):
        return
    saved_path = output / CONFIG_NAME
    if not saved_path.is_file():
        raise RunFolderError(f"--output {output} is not empty and holds no run of `antidistill bench run` (no "
                             f"{CONFIG_NAME}): give a new or empty folder; nothing was written")
    differences = changed_settings(saved_path, config)
    if differences:
        listed = "; ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in differences[:8])
        more = f" (and {len(differences) - 8} more)" if len(differences) > 8 else ""
        raise RunFolderError(f"--output {output} holds a run with other settings ({listed}{more}). Its results "
                             "would be mixed with this configuration's: give another --output, or rerun with the "
                             "saved settings to resume it")
    check_world(output, config)


def world_identity(config: BenchConfig) -> dict[str, Any]:
    """The toy world a run uses, by content hash (no world is built for this), or {} for hub models."""
    preset = config["toy_world"]
    if not preset:
        return {}
    from .toy_world import get_preset, world_hash

    return {"toy_world": str(preset), "hash": world_hash(get_preset(str(preset)))}


def check_world(output: Path, config: BenchConfig) -> None:
    """Refuse to resume a run on another toy world than the one its results came from."""
    saved_path = output / WORLD_NAME
    if not saved_path.is_file():
        print(f"note: {output} records no world ({WORLD_NAME}: a run of an earlier version); resuming it on the "
              "current world without checking", file=sys.stderr)
        return
    try:
        saved = json.loads(saved_path.read_text())
    except json.JSONDecodeError as error:
        raise RunFolderError(f"{saved_path} is not valid JSON ({error}): give another --output") from None
    current = world_identity(config)
    if saved != current:
        raise RunFolderError(f"--output {output} was made on world {saved.get('hash', saved)!r}, and this run's world "
                             f"is {current.get('hash', current)!r} (its code, preset or library versions changed). "
                             "Its results would be mixed with another world's: give another --output")


def changed_settings(saved_path: Path, config: BenchConfig) -> list[tuple[str, Any, Any]]:
    """(dotted key, saved value, new value) for every result-bearing setting that differs."""
    saved = yaml.safe_load(saved_path.read_text()) or {}
    if not isinstance(saved, dict) or "preset" not in saved:
        raise RunFolderError(f"{saved_path} is not a saved benchmark config: give a new or empty --output")
    try:  # over today's defaults, so that a setting added since the run was saved reads as its default
        saved_config = BenchConfig.load(str(saved["preset"]), saved_path)
    except ConfigError as error:
        raise RunFolderError(f"the run in {saved_path.parent} was saved with settings this version does not "
                             f"know ({error}): give another --output") from None
    return [d for d in _differences(saved_config.data, config.data)
            if d[0].split(".")[0] not in RESUMABLE_KEYS and d[0] not in EXTENDING_KEYS]


def _differences(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [(prefix.rstrip("."), old, new)]


def leftovers(folder: Path) -> list[Path]:
    """Temporary entries this program leaves when killed (`.name.XXXXXXXX.tmp`, `.student-XXXXXXXX`, ...)."""
    if not folder.is_dir():
        return []
    return [entry for entry in folder.iterdir() if _LEFTOVER.match(entry.name)]


@contextlib.contextmanager
def exclusive(output: Path) -> Iterator[None]:
    """Hold the run folder's lock for the block; a second run on the same folder fails at once."""
    import fcntl

    output.mkdir(parents=True, exist_ok=True)
    handle = open(output / LOCK_NAME, "a+")  # noqa: SIM115 (held open for the lock's lifetime)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunFolderError(f"--output {output} is in use by {holder}: wait for it to finish, or give "
                                 "another --output") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:  # still holding the lock: a run that opens the file now fails at once, one that opens it later
            with contextlib.suppress(FileNotFoundError):  # creates a new file
                (output / LOCK_NAME).unlink()
    finally:
        handle.close()
