"""Tasks by name: netmon's own, modules a user drops into tasks/, and modules named in the
config.

A task module lists its tasks in ``__all__``; each is a plain Nornir task
(``def name(task: Task) -> Result``) whose result is a list of netmon records. The
inventory schedules tasks by these names (``data: {tasks: [system, my_task]}``).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from typing import Any

from netmon.errors import ConfigError

__all__ = ["NornirTask", "TaskRegistry"]

NornirTask = Callable[..., Any]
BUILTIN_PACKAGE = "netmon.tasks"


class TaskRegistry:
    def __init__(self) -> None:
        self._tasks: dict[str, NornirTask] = {}
        self._origin: dict[str, str] = {}

    @classmethod
    def discover(cls, extra_modules: Iterable[str] = ()) -> TaskRegistry:
        """Every module of ``netmon.tasks`` (built-in or dropped in by a user), then the
        modules the config names. A later module may not silently replace a name."""
        registry = cls()
        package = importlib.import_module(BUILTIN_PACKAGE)
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_"):
                registry.add_module(f"{BUILTIN_PACKAGE}.{info.name}")
        for name in extra_modules:
            registry.add_module(name)
        return registry

    def add_module(self, module_name: str) -> None:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"poller.task_modules: cannot import {module_name}: {exc}") from exc
        names = getattr(module, "__all__", None)
        if not names:
            raise ConfigError(f"task module {module_name}: list its tasks in __all__")
        for name in names:
            task = getattr(module, name, None)
            if not callable(task):
                raise ConfigError(f"task module {module_name}: {name} is not a function")
            self.add(name, task, module_name)

    def add(self, name: str, task: NornirTask, origin: str = "") -> None:
        if name in self._tasks and self._tasks[name] is not task:
            raise ConfigError(f"task {name!r} is defined by both {self._origin[name]} and {origin}")
        self._tasks[name] = task
        self._origin[name] = origin

    def get(self, name: str) -> NornirTask:
        try:
            return self._tasks[name]
        except KeyError:
            known = ", ".join(sorted(self._tasks))
            raise ConfigError(f"unknown task {name!r} (known: {known})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    @property
    def names(self) -> list[str]:
        return sorted(self._tasks)
