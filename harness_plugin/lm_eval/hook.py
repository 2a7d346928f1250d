"""Make plain `lm_eval` find the `antidistill` model and this package's tasks (lm-eval 0.4.x has no plugin discovery).

The installed `antidistill_lm_eval.pth` puts a tiny trigger at the front of `sys.meta_path` and imports nothing
(measured: 0.5 ms per interpreter start, against 7-10 ms when the line imported this module). The first import of
`lm_eval` makes the trigger import this module and call `install_at_startup()`, which puts a small finder there
that watches two module names and imports nothing itself. When lm-eval imports

- `lm_eval.api.registry`: the built-in model table (`lm_eval.models`, a dictionary of lazy "module:Class"
  strings) is registered first, because lm-eval fills it only while the registry is empty and our entry would
  otherwise hide every built-in model; then `antidistill` is added as a lazy string, so nothing of ours (nor torch)
  is imported until someone asks for that model;
- `lm_eval.tasks.manager`: `TaskManager` also scans our `tasks/` folder, before any `--include_path` (so a user's
  folder still overrides a task of the same name); `include_defaults=False` is left alone.

Nothing here may break the interpreter or lm-eval: every step is wrapped, a failure logs one warning naming the
fallback (`antidistill lm-eval ...`), and `ANTIDISTILL_LM_EVAL_HOOK=0` turns the hook off. Releases of lm-eval that
read the `lm_eval.models` entry point (upstream PR #4013) find the model themselves; registering it twice is
skipped because the name is already present.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing (and re) at every start-up costs milliseconds
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

MODEL_NAME = "antidistill"
MODEL_TARGET = "harness_plugin.lm_eval.model:AntidistillLM"
REGISTRY_MODULE = "lm_eval.api.registry"
TASK_MANAGER_MODULE = "lm_eval.tasks.manager"
DISABLE_VARIABLE = "ANTIDISTILL_LM_EVAL_HOOK"
_WRAPPED_MARK = "_antidistill_tasks_path"


def tasks_path() -> str:
    """The folder holding this package's lm-eval task yamls (what `antidistill tasks-path` prints)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "tasks")


def _warn(what: str, error: BaseException) -> None:
    import logging

    logging.getLogger(__name__).warning(
        "antidistill: could not %s (%s: %s). Run `antidistill lm-eval ARGS...` (same arguments as lm_eval) "
        "instead, or set %s=0 to silence this.", what, type(error).__name__, error, DISABLE_VARIABLE)


def register_model(registry: Any) -> None:
    """Add `antidistill` to lm-eval's model registry as a lazy "module:Class" entry, keeping the built-ins."""
    models = registry.model_registry
    if len(models) == 0:
        # lm-eval imports its built-in table only when the registry is empty (`get_model`): do it now, or our
        # entry would make the registry non-empty and `--model hf` would stop resolving.
        import lm_eval.models  # noqa: F401
    if MODEL_NAME not in models:
        models.register(MODEL_NAME, target=MODEL_TARGET)


def _with_tasks_path(include_path: Any) -> Any:
    ours = tasks_path()
    if include_path is None:
        paths: list[Any] = []
    elif isinstance(include_path, (list, tuple)):
        paths = list(include_path)
    else:
        paths = [include_path]
    for path in paths:
        try:
            if os.path.samefile(os.fspath(path), ours):
                return include_path
        except (OSError, TypeError):
            continue
    return [ours, *paths]


def add_tasks_path(manager_module: Any) -> None:
    """Make every `TaskManager` with the default task folders also index ours."""
    import functools
    import inspect

    cls = manager_module.TaskManager
    original = cls.__init__
    if getattr(original, _WRAPPED_MARK, False):
        return
    signature = inspect.signature(original)

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError:
            return original(self, *args, **kwargs)  # let lm-eval report its own error
        if "include_path" in signature.parameters and bound.arguments.get("include_defaults", True):
            bound.arguments["include_path"] = _with_tasks_path(bound.arguments.get("include_path"))
        return original(*bound.args, **bound.kwargs)

    setattr(__init__, _WRAPPED_MARK, True)
    cls.__init__ = __init__


_HOOKS: dict[str, tuple[Callable[[Any], None], str]] = {
    REGISTRY_MODULE: (register_model, "register the antidistill model with lm-eval"),
    TASK_MANAGER_MODULE: (add_tasks_path, "add the antidistill tasks to lm-eval"),
}


def _run(module_name: str, module: Any) -> None:
    callback, what = _HOOKS[module_name]
    try:
        callback(module)
    except Exception as error:  # never break lm-eval: it still works without our model
        _warn(what, error)


class _LoaderProxy:
    """Runs the real loader, puts it back on the module, then calls our hook for that module."""

    def __init__(self, loader: Any, finder: _PostImportFinder, name: str) -> None:
        self._loader, self._finder, self._name = loader, finder, name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._loader, attribute)

    def create_module(self, spec: Any) -> Any:
        create = getattr(self._loader, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        module.__loader__ = self._loader
        if getattr(module, "__spec__", None) is not None:
            module.__spec__.loader = self._loader
        self._finder.done(self._name)
        _run(self._name, module)


class _PostImportFinder:
    """A `sys.meta_path` finder that only wraps the loaders of the watched modules; it finds nothing itself."""

    antidistill_hook = True

    def __init__(self, names: list[str]) -> None:
        self._pending = set(names)
        self._busy: set[str] = set()

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in self._pending or fullname in self._busy:
            return None
        self._busy.add(fullname)
        try:
            spec = None
            for finder in list(sys.meta_path):
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
        except Exception:
            return None  # let the normal import machinery try (and report) on its own
        finally:
            self._busy.discard(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        spec.loader = _LoaderProxy(spec.loader, self, fullname)  # type: ignore[assignment]
        return spec

    def done(self, name: str) -> None:
        self._pending.discard(name)
        if not self._pending and self in sys.meta_path:
            sys.meta_path.remove(self)


def install() -> bool:
    """Hook lm-eval's registry and task manager (now if already imported, else when they are imported).

    Returns False when the hook is turned off through `ANTIDISTILL_LM_EVAL_HOOK=0`.
    """
    if os.environ.get(DISABLE_VARIABLE, "1").strip().lower() in {"0", "false", "no", "off"}:
        return False
    pending = []
    for name in _HOOKS:
        module = sys.modules.get(name)
        if module is not None:
            _run(name, module)
        else:
            pending.append(name)
    if pending and not any(getattr(finder, "antidistill_hook", False) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PostImportFinder(pending))
    return True


def register_now() -> None:
    """Import lm-eval's registry and task manager and hook them at once (the `antidistill lm-eval` path).

    Unlike the start-up hook this raises, so the fallback command fails loudly rather than running without our model.
    """
    import importlib

    for name, (callback, _) in _HOOKS.items():
        callback(importlib.import_module(name))


def install_at_startup() -> None:
    """Entry point of the .pth file: never raises."""
    try:
        install()
    except Exception as error:
        _warn("install the lm-eval import hook", error)
