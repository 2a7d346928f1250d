"""PEP 517 build backend: setuptools, plus `antidistill_lm_eval.pth` at the root of every wheel (also editable ones).

Why: lm-eval 0.4.x has no plugin discovery for models or tasks, so plain `lm_eval --model antidistill` needs a
start-up hook (see harness_plugin/lm_eval_hook.py). setuptools cannot place a file at a wheel's root in both
regular and editable (PEP 660) builds, so this backend lets setuptools build the wheel and then adds the .pth file
to it, with its RECORD line. Every other hook is setuptools' own; the sdist is setuptools' sdist (MANIFEST.in
includes this folder, which `backend-path` needs).

The .pth line does nothing when the package cannot be imported, and the hook it calls never raises.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
import zipfile

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403  (every hook we do not override)

PTH_NAME = "antidistill_lm_eval.pth"
# site.py executes .pth lines that start with "import". The line defines a tiny finder and imports nothing: only
# when something imports `lm_eval` does it import `harness_plugin.lm_eval_hook` (which installs the real hook) and
# step aside, so an interpreter that never touches lm-eval pays for one small class, not for a package import.
# `ANTIDISTILL_LM_EVAL_HOOK=0` skips even that. A stale file (package uninstalled, editable source moved) stays
# silent; any other failure prints one line, never a traceback, and the import goes on as usual.
_PTH_CODE = """\
class AntidistillLmEvalTrigger:
    antidistill_hook = True

    def find_spec(self, name, path=None, target=None):
        if name != 'lm_eval' and not name.startswith('lm_eval.'):
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        try:
            import harness_plugin.lm_eval_hook as hook
            hook.install_at_startup()
        except Exception as e:
            if not (isinstance(e, ImportError) and str(getattr(e, 'name', '') or '').startswith('harness_plugin')):
                sys.stderr.write('antidistill: lm-eval start-up hook skipped (%s: %s); set '
                                 'ANTIDISTILL_LM_EVAL_HOOK=0 to silence this\\n' % (type(e).__name__, e))
            return None
        for finder in sys.meta_path:
            if getattr(finder, 'antidistill_hook', False):
                return finder.find_spec(name, path, target)
        return None


if os.environ.get('ANTIDISTILL_LM_EVAL_HOOK', '1').strip().lower() not in ('0', 'false', 'no', 'off'):
    sys.meta_path.insert(0, AntidistillLmEvalTrigger())
"""
PTH_LINE = f"import os, sys; exec({_PTH_CODE!r})\n"


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def add_to_wheel(wheel_path: str, name: str, data: bytes) -> None:
    """Rewrite `wheel_path` with `name` (at the wheel's root) added and listed in RECORD; atomic."""
    with zipfile.ZipFile(wheel_path) as source:
        entries = [(info, source.read(info)) for info in source.infolist()]
    if any(info.filename == name for info, _ in entries):
        return
    records = [info for info, _ in entries if info.filename.endswith(".dist-info/RECORD")]
    if len(records) != 1:
        raise RuntimeError(f"{wheel_path}: expected one .dist-info/RECORD, found {len(records)}")
    record = records[0]
    folder = os.path.dirname(wheel_path) or "."
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".antidistill-", suffix=".whl")
    os.close(handle)
    try:
        with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as target:
            info = zipfile.ZipInfo(name, date_time=record.date_time)
            info.external_attr = 0o644 << 16
            target.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
            for entry, content in entries:
                if entry is record:
                    lines = content.decode("utf-8").rstrip("\n").split("\n")
                    lines.insert(len(lines) - 1 if lines[-1].startswith(entry.filename + ",") else len(lines),
                                 _record_line(name, data))
                    content = ("\n".join(lines) + "\n").encode("utf-8")
                target.writestr(entry, content, compress_type=entry.compress_type)
        os.replace(temporary, wheel_path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):  # type: ignore[no-untyped-def]
    name = _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)
    add_to_wheel(os.path.join(wheel_directory, name), PTH_NAME, PTH_LINE.encode("utf-8"))
    return name


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):  # type: ignore[no-untyped-def]
    name = _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
    add_to_wheel(os.path.join(wheel_directory, name), PTH_NAME, PTH_LINE.encode("utf-8"))
    return name
