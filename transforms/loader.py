"""Load user transforms by import path or by entry point.

A step ``{type: python, path: "package.module:name", ...options}`` or
``{type: <entry point name>, ...options}`` (group ``readside.transforms``)
names one of:

* a plain function ``doc -> doc | None``: used as is, takes no options;
* a factory, i.e. a class or a function marked with :func:`transform_factory`:
  called once at start with the step's other options as a dict, returns the
  transform. A factory may raise :class:`~pipeline.errors.ConfigError` (or
  ``ValueError``/``TypeError``) to reject its options.

Built-in type names take precedence over entry points of the same name.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from pipeline.errors import ConfigError
from transforms.base import Transform
from transforms.builtins import BUILTINS

GROUP = "readside.transforms"
_FACTORY_MARK = "__readside_transform_factory__"
_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")

F = TypeVar("F", bound=Callable[..., Any])


def transform_factory(fn: F) -> F:
    """Mark ``fn`` as a factory: ``fn(options: dict) -> Transform``."""
    setattr(fn, _FACTORY_MARK, True)
    return fn


def load_path(options: Mapping[str, Any]) -> Transform:
    """The transform of a ``python`` step; ``options['path']`` names it.

    Raises:
        ConfigError: the path is missing or malformed, cannot be imported, or
            the object or its options are not usable.
    """
    rest = dict(options)
    path = rest.pop("path", None)
    if not isinstance(path, str) or not _PATH.match(path):
        raise ConfigError(
            f"field path: expected 'package.module:function', got {path!r}"
        )
    module_name, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(
            f"field path: cannot import {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(
                f"field path: {module_name!r} has no attribute {attr!r}"
            ) from None
    return _instantiate(obj, rest, path)


def load_entry_point(name: str, options: Mapping[str, Any]) -> Transform:
    """The transform registered as entry point ``name`` of :data:`GROUP`.

    Raises:
        ConfigError: no such entry point (or several), or it cannot be loaded.
    """
    available = importlib.metadata.entry_points(group=GROUP)
    found = [ep for ep in available if ep.name == name]
    if not found:
        known = sorted({*BUILTINS, "python"})
        known += sorted(ep.name for ep in available)
        raise ConfigError(
            f"field type: unknown transform type {name!r} (known: {', '.join(known)})"
        )
    if len({ep.value for ep in found}) > 1:
        raise ConfigError(f"field type: several entry points are named {name!r}")
    try:
        obj = found[0].load()
    except Exception as exc:
        raise ConfigError(
            f"field type: cannot load entry point {name!r} ({found[0].value}): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return _instantiate(obj, dict(options), found[0].value)


def _instantiate(obj: Any, options: dict[str, Any], origin: str) -> Transform:
    if isinstance(obj, type) or getattr(obj, _FACTORY_MARK, False):
        try:
            made = obj(options)
        except ConfigError:
            raise
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError(
                f"{origin} rejected its options: {type(exc).__name__}: {exc}"
            ) from exc
        if not callable(made):
            raise ConfigError(f"{origin} did not return a callable transform")
        return made  # type: ignore[no-any-return]  # checked callable above
    if not callable(obj):
        raise ConfigError(f"{origin} is not callable")
    if options:
        names = ", ".join(sorted(options))
        raise ConfigError(
            f"{origin} is a plain function and takes no options (got {names}); "
            "mark a factory with @transform_factory"
        )
    return obj  # type: ignore[no-any-return]  # checked callable above
