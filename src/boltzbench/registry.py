"""Name-addressed registries for targets, methods and metrics.

Every kind of component (targets, methods, metrics) has one :class:`Registry`.
Entries are addressed by name from ``config.yaml``. An unknown name, or a
parameter the constructor does not take, raises a :class:`RegistryError` that
lists the valid choices.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = [
    "Registry",
    "RegistryError",
    "import_callable",
    "check_kwargs",
    "required_params",
    "spec_factory",
    "build_spec",
    "check_instance",
]

T = TypeVar("T")


class RegistryError(KeyError, ValueError):
    """An unknown name or parameter; the message lists the valid choices."""

    def __str__(self) -> str:  # KeyError quotes its message; we do not want that
        return str(self.args[0])


class Registry(Generic[T]):
    """A mapping from names to factories (classes or functions)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable[..., T] | str] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering ``factory`` under ``name``.

        It may replace a lazy entry of the same name (see :meth:`register_lazy`).
        """

        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries and not isinstance(self._entries[name], str):
                raise RegistryError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = factory
            return factory

        return decorator

    def register_lazy(self, name: str, path: str) -> None:
        """Register ``"module:attribute"``, imported the first time ``name`` is used.

        Each pipeline job imports only the families it runs (zuko costs a job
        about a second on this class of machine).
        """
        if name in self._entries:
            raise RegistryError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = path

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str) -> Callable[..., T]:
        try:
            entry = self._entries[name]
        except KeyError:
            raise RegistryError(
                f"unknown {self.kind} {name!r}; valid choices: {', '.join(self.names())}"
            ) from None
        if isinstance(entry, str):
            entry = import_callable(entry)
            self._entries[name] = entry
        return entry

    def module_of(self, name: str) -> str:
        """The module that defines entry ``name`` (without importing a lazy one)."""
        entry = self._entries.get(name)
        if entry is None:
            self.get(name)  # raises the error listing the valid names
        return entry.partition(":")[0] if isinstance(entry, str) else entry.__module__

    def build(self, name: str, **kwargs: Any) -> T:
        """Build entry ``name`` with ``kwargs``, checking every keyword first."""
        factory = self.get(name)
        check_kwargs(factory, kwargs, f"{self.kind} {name!r}")
        return factory(**kwargs)


def accepted_params(factory: Callable[..., Any]) -> list[str] | None:
    """Keyword names ``factory`` accepts, or None when it takes ``**kwargs``."""
    params = inspect.signature(factory).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL]


def required_params(factory: Callable[..., Any]) -> list[str]:
    """Keyword names ``factory`` needs (those without a default)."""
    params = inspect.signature(factory).parameters.values()
    kinds = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [p.name for p in params if p.default is inspect.Parameter.empty and p.kind not in kinds]


def check_kwargs(factory: Callable[..., Any], kwargs: dict[str, Any], what: str) -> None:
    """Raise :class:`RegistryError` naming any keyword ``factory`` does not take."""
    valid = accepted_params(factory)
    if valid is None:
        return
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise RegistryError(
            f"{what} does not take parameter(s) {', '.join(unknown)}; "
            f"valid parameters: {', '.join(valid) or '(none)'}"
        )


def import_callable(spec: str) -> Callable[..., Any]:
    """Import ``"package.module:attribute"`` and return the callable it names."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise RegistryError(f"{spec!r} is not of the form 'module:callable'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise RegistryError(f"cannot import module {module_name!r} from {spec!r}: {err}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise RegistryError(f"module {module_name!r} has no attribute {attr!r} ({spec!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise RegistryError(f"{spec!r} is not callable")
    return obj


def spec_factory(registry: Registry[T], spec: dict[str, Any]) -> Callable[..., T]:
    """The factory a config entry names: its ``callable`` ("module:function" or a
    class, a user's), else its registered ``kind``."""
    if spec.get("callable"):
        return import_callable(spec["callable"])
    return registry.get(spec["kind"])


def build_spec(registry: Registry[T], spec: dict[str, Any], base: type) -> T:
    """Build the config entry ``{kind|callable, params}`` of ``registry``.

    Every keyword is checked first; a user callable must return an instance of
    ``base`` (RegistryError otherwise, naming what it returned).
    """
    factory = spec_factory(registry, spec)
    params = dict(spec.get("params") or {})
    name = spec.get("kind") or spec.get("callable")
    check_kwargs(factory, params, f"{registry.kind} {name!r}")
    return check_instance(factory(**params), base, name)


def check_instance(built: Any, base: type, name: str) -> Any:
    """``built``, or RegistryError when it is not a ``base`` (what ``name`` returned)."""
    if not isinstance(built, base):
        raise RegistryError(
            f"{name!r} returned {type(built).__name__}, not a boltzbench {base.__name__} "
            f"(an instance of {base.__module__}.{base.__name__})"
        )
    return built
