"""Run a callback once a module has been imported: how `register()` stays cheap in processes that never parse.

Both engines call our `register()` in every process they start (vLLM workers, SGLang schedulers and detokenizers),
but only some of those processes ever import the parser registries. Importing them eagerly costs seconds of CPU
per process; instead `register()` asks to be called back when the engine itself imports the registry module. If
the module is already imported, the callback runs at once. Standard library only.
"""

from __future__ import annotations

import importlib.abc
import sys
import threading
from types import ModuleType
from typing import Callable

Callback = Callable[[ModuleType], None]

_lock = threading.RLock()
_pending: dict[str, list[Callback]] = {}


def when_imported(module_name: str | tuple[str, ...], callback: Callback) -> None:
    """Call `callback(module)` after `module_name` has been executed (now, if it already has been).

    A tuple names one module at each place an engine has kept it (vLLM moves modules and leaves the old name as an
    alias of the new one for a while): the callback runs once, at whichever name is imported first."""
    names = (module_name,) if isinstance(module_name, str) else module_name
    if len(names) > 1:
        callback = _once(callback)
    for name in names:
        with _lock:
            module = sys.modules.get(name)
            if module is None:
                _pending.setdefault(name, []).append(callback)
                if not any(isinstance(finder, _PostImportFinder) for finder in sys.meta_path):
                    sys.meta_path.insert(0, _PostImportFinder())
                continue
        callback(module)


def _once(callback: Callback) -> Callback:
    done: list[bool] = []

    def call(module: ModuleType) -> None:
        with _lock:
            if done:
                return
            done.append(True)
        callback(module)

    return call


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: it asks the finders after it, then wraps the loader of a watched module."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in _pending:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _CallbackLoader(spec.loader)
        return spec


class _CallbackLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):  # get_resource_reader, is_package, get_source ... belong to the real loader
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        with _lock:
            callbacks = _pending.pop(module.__name__, [])
        # What `import` hands the importer: a module that puts another in its place (an alias left where a module
        # used to be) has replaced itself in sys.modules.
        module = sys.modules.get(module.__name__, module)
        for callback in callbacks:
            callback(module)
