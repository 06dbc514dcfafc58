"""Name-addressed registries for targets, methods and metrics.

Every kind of component (targets, methods, metrics) has one :class:`Registry`.
Entries are addressed by name from ``config.yaml``. An unknown name, or a
parameter the constructor does not take, raises a :class:`RegistryError` that
lists the valid choices.

A lazy entry (``"module:attribute"``) is described without importing it: its
module (:meth:`Registry.module_of`) and its constructor's keyword names
(:meth:`Registry.params`, read from the module's source), so the workflow can
check a config's kinds and parameter names without importing torch.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, Generic, TypeVar

__all__ = [
    "Registry",
    "RegistryError",
    "Params",
    "import_callable",
    "check_kwargs",
    "check_params",
    "factory_params",
    "static_params",
    "required_params",
    "lazy_exports",
    "check_callable_path",
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

    def params(self, name: str) -> Params | None:
        """The keywords entry ``name`` takes, without importing a lazy one (read from
        its module's source; None where the source does not say, see
        :func:`static_params`)."""
        entry = self._entries.get(name)
        if entry is None:
            self.get(name)  # raises the error listing the valid names
        return static_params(entry) if isinstance(entry, str) else factory_params(entry)

    def build(self, name: str, **kwargs: Any) -> T:
        """Build entry ``name`` with ``kwargs``, checking every keyword first."""
        factory = self.get(name)
        check_kwargs(factory, kwargs, f"{self.kind} {name!r}")
        return factory(**kwargs)


@dataclass(frozen=True)
class Params:
    """The keyword names a factory takes: ``accepted`` (None when it takes
    ``**kwargs``) and ``required`` (those without a default)."""

    accepted: tuple[str, ...] | None
    required: tuple[str, ...]


def factory_params(factory: Callable[..., Any]) -> Params:
    """The :class:`Params` of an imported ``factory`` (from its signature)."""
    params = inspect.signature(factory).parameters.values()
    kinds = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    named = [p for p in params if p.kind not in kinds]
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    return Params(
        accepted=None if takes_any else tuple(p.name for p in named),
        required=tuple(p.name for p in named if p.default is inspect.Parameter.empty),
    )


@cache
def static_params(path: str) -> Params | None:
    """The :class:`Params` of ``"module:attribute"``, read from the module's source
    without importing it (its parent packages are imported to find it).

    The attribute must be a function or a class defined at the module's top
    level; a class without its own ``__init__`` takes the one of its first base
    defined in the same module. None where the source does not say (another
    shape, a decorated function, no source file): then the factory must be
    imported to know.
    """
    module_name, _, attr = path.partition(":")
    spec = importlib.util.find_spec(module_name)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    with open(spec.origin, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    defs = {n.name: n for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
    return _def_params(defs, attr, set())


def _def_params(defs: dict[str, ast.AST], name: str, seen: set[str]) -> Params | None:
    """The :class:`Params` of the top-level function or class ``name`` in ``defs``."""
    node = defs.get(name)
    if node is None or name in seen or node.decorator_list:
        return None
    if isinstance(node, ast.FunctionDef):
        return _arguments_params(node.args, skip_first=False)
    seen.add(name)
    init = next(
        (n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None
    )
    if init is not None:
        return None if init.decorator_list else _arguments_params(init.args, skip_first=True)
    base = node.bases[0] if node.bases else None
    return _def_params(defs, base.id, seen) if isinstance(base, ast.Name) else None


def _arguments_params(args: ast.arguments, skip_first: bool) -> Params:
    """:class:`Params` of a ``def``'s arguments (``skip_first``: a method's ``self``)."""
    positional = [*args.posonlyargs, *args.args][1 if skip_first else 0 :]
    n_without_default = len(positional) - len(args.defaults)
    required = [a.arg for a in positional[:n_without_default]]
    required += [a.arg for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is None]
    named = [a.arg for a in [*positional, *args.kwonlyargs]]
    return Params(None if args.kwarg else tuple(named), tuple(required))


def required_params(factory: Callable[..., Any]) -> list[str]:
    """Keyword names ``factory`` needs (those without a default)."""
    return list(factory_params(factory).required)


def check_kwargs(factory: Callable[..., Any], kwargs: dict[str, Any], what: str) -> None:
    """Raise :class:`RegistryError` naming any keyword ``factory`` does not take."""
    check_params(factory_params(factory), kwargs, what)


def check_params(params: Params, kwargs: dict[str, Any], what: str) -> None:
    """Raise :class:`RegistryError` naming any keyword of ``kwargs`` outside ``params``."""
    if params.accepted is None:
        return
    unknown = sorted(set(kwargs) - set(params.accepted))
    if unknown:
        raise RegistryError(
            f"{what} does not take parameter(s) {', '.join(unknown)}; "
            f"valid parameters: {', '.join(params.accepted) or '(none)'}"
        )


def check_callable_path(spec: str) -> tuple[str, str]:
    """``(module, attribute)`` of ``"package.module:attribute"``; RegistryError when
    ``spec`` is not of that form (checked without importing anything)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise RegistryError(f"{spec!r} is not of the form 'module:callable'")
    return module_name, attr


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) that imports ``exports[name]``, a module,
    the first time ``package.name`` is read, so importing ``package`` imports none
    of them (a registry's package stays free of torch)."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    return __getattr__


def import_callable(spec: str) -> Callable[..., Any]:
    """Import ``"package.module:attribute"`` and return the callable it names."""
    module_name, attr = check_callable_path(spec)
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
