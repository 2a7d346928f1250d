"""How the package is built and what it installs: the wheels (regular and editable) and the sdist that the backend
named in pyproject.toml builds, and the lm-eval start-up files they put into site-packages.

The start-up files live in harness_plugin/_startup/ and go to the wheel root by hatchling's force-include:
`antidistill_lm_eval.pth` (one `import` line that site.py executes; it defines a lazy trigger and imports nothing
of ours) and `antidistill_lm_eval.start` (PEP 829, Python 3.15+: the entry point
`harness_plugin.lm_eval.trigger:install`, read instead of the .pth's import line). Both must do the same thing,
so the .start's code is compared with the .pth's and both are run the way their interpreters run them.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STARTUP = ROOT / "harness_plugin" / "_startup"
PTH = STARTUP / "antidistill_lm_eval.pth"
START = STARTUP / "antidistill_lm_eval.start"
ENTRY_POINT = "harness_plugin.lm_eval.trigger:install"
PACKAGES = ("harness_plugin", "benchmarks", "analysis")
# Every file a wheel may hold in the packages besides modules: what the code reads at run time.
DATA_FILES = {f"{package}/py.typed" for package in PACKAGES} | {
    path.relative_to(ROOT).as_posix()
    for pattern in ("harness_plugin/lm_eval/tasks/**/*.yaml", "benchmarks/presets/*.yaml") for path in ROOT.glob(pattern)}


def _python(code: str, cwd: Path, *flags: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **env}
    return subprocess.run([sys.executable, *flags, "-c", code], cwd=cwd, env=environment, capture_output=True,
                          text=True, timeout=300)


def _pth_line() -> str:
    return PTH.read_text(encoding="utf-8")


def _start_entries() -> list[str]:
    """The .start file's entry points, read as PEP 829 reads them (utf-8-sig; blank and # lines skipped)."""
    lines = (line.strip() for line in START.read_text(encoding="utf-8-sig").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


# The code each start-up file makes an interpreter run, as a prefix to a test program started with -S (so no
# installed .pth or .start runs): site.py exec()s the .pth's import line; PEP 829 resolves each .start entry point
# with pkgutil.resolve_name and calls it with no arguments.
def _startup_code(kind: str) -> str:
    if kind == "pth":
        return _pth_line()
    return "".join(f"import pkgutil; pkgutil.resolve_name({entry!r})()\n" for entry in _start_entries())


# ------------------------------------------------------------------------------------------ the start-up files
def test_pth_file_is_one_import_line_that_site_executes():
    data = PTH.read_bytes()
    assert data.count(b"\n") == 1 and data.endswith(b"\n") and data.startswith(b"import ")
    assert b"harness_plugin.lm_eval.hook" in data and b"ANTIDISTILL_LM_EVAL_HOOK" in data


def test_start_file_names_one_entry_point_in_the_pep_829_form():
    assert START.stem == PTH.stem  # a matching name is what makes 3.15+ skip the .pth's import line
    entries = _start_entries()
    assert entries == [ENTRY_POINT]
    assert re.fullmatch(r"\w+(\.\w+)*:\w+(\.\w+)*", entries[0])  # pkg.mod:callable, the callable required
    from harness_plugin.lm_eval import trigger

    assert pkgutil.resolve_name(entries[0]) is trigger.install


def test_start_entry_point_runs_the_code_of_the_pth_line():
    """The .pth line exec()s a class definition and an `if`; lm_eval/trigger.py holds the same class and the same
    `if` as the body of install(), statement for statement."""
    pth_code = re.fullmatch(r"import os, sys; exec\((.*)\)\n", _pth_line(), re.DOTALL)
    assert pth_code, "the .pth line is no longer `import os, sys; exec('...')`"
    pth_body = ast.parse(ast.literal_eval(pth_code.group(1))).body
    module = ast.parse((ROOT / "harness_plugin" / "lm_eval" / "trigger.py").read_text(encoding="utf-8"))
    classes = [node for node in module.body if isinstance(node, ast.ClassDef)]
    install = next(node for node in module.body if isinstance(node, ast.FunctionDef) and node.name == "install")
    assert [ast.dump(node) for node in pth_body] == [ast.dump(node) for node in [*classes, *install.body]]
    imports = [alias.name for node in module.body if isinstance(node, (ast.Import, ast.ImportFrom))
               for alias in node.names]
    assert imports == ["os", "sys"]  # nothing else at start-up (the hook itself is imported inside find_spec)


def test_pth_line_is_harmless_without_the_package(tmp_path):
    # -S: no site-packages, so harness_plugin cannot be found (cwd is a folder without it); the trigger waits for
    # an lm_eval import, finds no package, says nothing and steps aside. (A .start file needs no such test: its
    # entry point is a module of the package, and a missing one is reported by Python itself.)
    code = ("import sys\ntry:\n import lm_eval\nexcept ImportError:\n pass\n"
            "print(any(getattr(f, 'antidistill_hook', 0) for f in sys.meta_path))")
    result = _python(_pth_line() + code, tmp_path, "-S")
    assert result.returncode == 0 and result.stdout.strip() == "False" and not result.stderr


@pytest.mark.parametrize(("kind", "started"), [("pth", []),
                                               ("start", ["harness_plugin", "harness_plugin.lm_eval", "harness_plugin.lm_eval.trigger"])])
def test_startup_files_import_nothing_until_lm_eval_then_register_the_model(tmp_path, kind, started):
    """Each start-up file alone (-S: no installed .pth or .start runs): nothing of ours is imported at start-up
    beyond the .start's own module, importing lm-eval registers the model, and the switch turns it off."""
    path = os.pathsep.join([str(ROOT), sysconfig.get_paths()["purelib"]])
    probe = ("import sys\nstarted = sorted(m for m in sys.modules if m.startswith('harness_plugin'))\n"
             "import lm_eval.api.registry as r\nprint(started, 'antidistill' in r.model_registry)")
    on = _python(_startup_code(kind) + probe, tmp_path, "-S", PYTHONPATH=path)
    assert on.stdout.strip() == f"{started} True", on.stderr[-2000:]
    off = _python(_startup_code(kind) + probe, tmp_path, "-S", PYTHONPATH=path, ANTIDISTILL_LM_EVAL_HOOK="0")
    assert off.returncode == 0 and off.stdout.strip() == f"{started} False", off.stderr[-2000:]


@pytest.mark.parametrize(("kind", "broken_module"), [("pth", "__init__"), ("pth", "lm_eval/hook"),
                                                     ("start", "lm_eval/hook")])
def test_a_broken_package_costs_one_line_not_a_traceback(tmp_path, kind, broken_module):
    # A half-installed package whose module raises when lm-eval is first imported. (A .start file cannot survive a
    # broken harness_plugin/__init__.py: resolving its entry point imports it, and Python reports that itself.)
    broken = tmp_path / "broken" / "harness_plugin"
    broken.mkdir(parents=True)
    (broken / "lm_eval").mkdir()
    for init in (broken / "__init__.py", broken / "lm_eval" / "__init__.py"):
        init.write_text("")
    shutil.copy(ROOT / "harness_plugin" / "lm_eval" / "trigger.py", broken / "lm_eval" / "trigger.py")
    (broken / f"{broken_module}.py").write_text("raise RuntimeError('half-installed')\n")
    code = _startup_code(kind) + "try:\n import lm_eval\nexcept ImportError:\n pass\nprint('started')"
    result = _python(code, tmp_path, "-S", PYTHONPATH=str(broken.parent))
    assert result.returncode == 0 and result.stdout.strip() == "started", result.stderr[-2000:]
    assert len(result.stderr.splitlines()) == 1 and "half-installed" in result.stderr
    assert "Traceback" not in result.stderr and "ANTIDISTILL_LM_EVAL_HOOK=0" in result.stderr


# --------------------------------------------------------------------------------- what the backend builds
def _build_backend() -> str:
    match = re.search(r'^build-backend\s*=\s*"([\w.]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert match, "pyproject.toml names no build-backend"
    return match.group(1)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """A regular wheel, an editable wheel and an sdist, built from the checkout the way a PEP 517/660 frontend
    does (the backend's hooks, in a fresh interpreter started in the project folder), but without network: the
    backend must be installed here (tox installs it; elsewhere `pip install hatchling`)."""
    backend = _build_backend()
    pytest.importorskip(backend.split(".")[0], reason=f"the build backend {backend} is not installed")
    out = tmp_path_factory.mktemp("built")
    code = f"import {backend} as backend\n" + "".join(
        f"print(backend.{hook}({str(out / kind)!r}))\n"
        for kind, hook in (("regular", "build_wheel"), ("editable", "build_editable"), ("sdist", "build_sdist")))
    result = _python(code, ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    names = result.stdout.split()[-3:]
    return {kind: out / kind / name for kind, name in zip(("regular", "editable", "sdist"), names)}


def _record(wheel: zipfile.ZipFile) -> tuple[str, list[str]]:
    records = [name for name in wheel.namelist() if name.endswith(".dist-info/RECORD")]
    assert len(records) == 1, records
    return records[0], wheel.read(records[0]).decode("utf-8").splitlines()


@pytest.mark.parametrize("kind", ["regular", "editable"])
def test_both_wheel_kinds_carry_the_startup_files_at_their_root(built, kind):
    with zipfile.ZipFile(built[kind]) as wheel:
        assert wheel.testzip() is None
        record, lines = _record(wheel)
        for source in (PTH, START):
            assert wheel.read(source.name) == source.read_bytes()
        contents = {name: wheel.read(name) for name in wheel.namelist() if name != record}
    # RECORD lists every file with its sha256 and size, and itself last without a hash
    digests = {name: base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
               for name, data in contents.items()}
    expected = sorted(f"{name},sha256={digests[name]},{len(data)}" for name, data in contents.items())
    assert sorted(lines[:-1]) == expected
    assert lines[-1] == f"{record},,"


def test_regular_wheel_holds_the_packages_their_data_files_and_nothing_else(built):
    with zipfile.ZipFile(built["regular"]) as wheel:
        names = set(wheel.namelist())
        record, _ = _record(wheel)
        entry_points = wheel.read(record.replace("RECORD", "entry_points.txt")).decode()
    dist_info = record.rsplit("/", 1)[0]
    assert {name.split("/")[0] for name in names} == {*PACKAGES, dist_info, PTH.name, START.name}
    in_packages = {name for name in names if name.split("/")[0] in PACKAGES}
    assert {name for name in in_packages if not name.endswith(".py")} == DATA_FILES
    assert len(DATA_FILES) >= 3 + 5 + 5  # py.typed files, task yamls, presets: the globs above found them
    modules = {path.relative_to(ROOT).as_posix() for package in PACKAGES for path in (ROOT / package).rglob("*.py")
               if "__pycache__" not in path.parts}
    assert modules <= in_packages  # every module of the checkout, lm_eval/trigger.py and tasks/*.py included
    assert not any(part in ("_startup", "tests", "runs", "__pycache__") for name in names for part in name.split("/"))
    assert "[lm_eval.models]\nantidistill = harness_plugin.lm_eval.model:AntidistillLM" in entry_points
    assert "[lm_eval.tasks]\nantidistill = harness_plugin.lm_eval.tasks" in entry_points


def test_editable_wheel_puts_the_checkout_on_sys_path_and_copies_no_package(built):
    with zipfile.ZipFile(built["editable"]) as wheel:
        names = set(wheel.namelist())
        pth_files = {name: wheel.read(name).decode() for name in names if name.endswith(".pth")}
    assert not any(name.split("/")[0] in PACKAGES for name in names)
    assert pth_files.pop(PTH.name) == _pth_line()
    assert [Path(text.strip()) for text in pth_files.values()] == [ROOT]  # hatchling's own `_antidistill.pth`


def test_sdist_holds_what_its_wheel_needs_and_no_local_state(built):
    with tarfile.open(built["sdist"]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    needed = {"pyproject.toml", "README.md", "LICENSE", "PKG-INFO", "tox.ini",
              PTH.relative_to(ROOT).as_posix(), START.relative_to(ROOT).as_posix(), *DATA_FILES,
              "harness_plugin/lm_eval/trigger.py", "tests/conftest.py", "tests/test_packaging.py"}
    assert needed <= names, needed - names
    top = {name.split("/")[0] for name in names}
    assert top <= {*PACKAGES, "tests", "pyproject.toml", "README.md", "LICENSE", "PKG-INFO", "tox.ini", ".gitignore"}
    assert not any(part in ("__pycache__", ".venv", ".tox", "runs", "build") for name in names
                   for part in name.split("/"))
