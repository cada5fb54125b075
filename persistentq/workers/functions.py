"""User functions: loading `module:function` specs and telling async from sync."""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigError

JobFunction = Callable[..., Any]


def is_async(function: JobFunction) -> bool:
    """Tell whether calling `function` returns a coroutine to await."""
    if inspect.iscoroutinefunction(function):
        return True
    call = getattr(function, "__call__", None)
    return call is not None and inspect.iscoroutinefunction(call)


def check_function(function: object) -> JobFunction:
    """Return `function` when it is callable; raise TypeError naming it otherwise."""
    if not callable(function):
        raise TypeError(
            f"execute_function takes an async def or a plain def, got {type(function).__name__}: "
            f"{function!r:.80}"
        )
    return function


def load_function(spec: str, *, key: str, search_dir: Path | None = None) -> JobFunction:
    """Import the function named by `spec` ("package.module:function").

    `search_dir` (the config file's directory) is put on sys.path first, so a
    module beside config.yaml imports without setting PYTHONPATH. Raises
    ConfigError naming the config `key` when the module or the function
    cannot be found, or the attribute is not callable.
    """
    if search_dir is not None and str(search_dir) not in sys.path:
        sys.path.insert(0, str(search_dir))
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"{key} must look like 'package.module:function', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"{key}: cannot import module {module_name!r} ({exc}); "
            "check the name, and put the module beside the config file or on PYTHONPATH"
        ) from exc

    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(
                f"{key}: module {module_name!r} has no attribute {attribute!r}; check the spelling"
            ) from None
    if not callable(target):
        raise ConfigError(f"{key}: {spec!r} is a {type(target).__name__}, not a function")
    return target
