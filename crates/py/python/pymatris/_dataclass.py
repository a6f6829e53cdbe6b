"""``dataclass`` and ``field`` for the settings classes, without importing
``dataclasses`` with the package.

``dataclasses`` imports ``inspect``, which imports ``ast``, ``dis``,
``tokenize`` and ``enum``: more CPU than the rest of ``import pymatris``
and the engine's start together, paid again by every script that
downloads a few small files. This decorator makes what
``dataclasses.dataclass`` makes for a class of plain fields (an
``__init__`` taking them in order, with their defaults and
``__post_init__``; ``__repr__``; ``__eq__``; ``__match_args__``), and the
classes stay dataclasses for the tools that work on one:
``dataclasses.fields()``, ``asdict()``, ``replace()``,
``is_dataclass()`` and subclasses made with ``@dataclass`` read
``__dataclass_fields__`` and ``__dataclass_params__``, which
``dataclasses`` itself builds the first time either is asked for. Type checkers see
``dataclasses.dataclass`` (see ``config.py``).
"""

from __future__ import annotations

# Not `typing.TYPE_CHECKING`: importing typing is itself a cost we avoid;
# type checkers treat any constant of this name alike.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List


class _Factory:
    """``field(default_factory=make)``."""

    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


class _FactoryDefault:
    """The default ``__init__`` shows for a field with a factory, as
    ``dataclasses`` shows it."""

    def __repr__(self) -> str:
        return "<factory>"


_NO_DEFAULT = object()
_FROM_FACTORY = _FactoryDefault()


def field(*, default_factory: Callable[[], Any]) -> Any:
    return _Factory(default_factory)


class _Record:
    """What ``dataclasses`` needs to know of a class: made into its real
    ``__dataclass_fields__`` and ``__dataclass_params__`` the first time
    something asks for either."""

    def __init__(self, cls: type, names: List[str], defaults: Dict[str, Any]) -> None:
        self.cls = cls
        self.names = names
        self.defaults = defaults

    def realise(self) -> None:
        import dataclasses

        specs = []
        for name in self.names:
            default = self.defaults[name]
            if isinstance(default, _Factory):
                spec = dataclasses.field(default_factory=default.make)
            elif default is _NO_DEFAULT:
                spec = dataclasses.field()
            else:
                spec = dataclasses.field(default=default)
            specs.append((name, self.cls.__dict__["__annotations__"][name], spec))
        twin = dataclasses.make_dataclass(self.cls.__name__, specs)
        # Replace the two lazy attributes with the twin's real ones.
        self.cls.__dataclass_fields__ = twin.__dataclass_fields__  # type: ignore[attr-defined]
        self.cls.__dataclass_params__ = twin.__dataclass_params__  # type: ignore[attr-defined]


class _Lazy:
    """One of the two attributes, read from a class (subclasses included) or
    an instance."""

    def __init__(self, record: _Record, attr: str) -> None:
        self.record = record
        self.attr = attr

    def __get__(self, instance: Any, owner: type) -> Any:
        self.record.realise()
        return getattr(self.record.cls, self.attr)


def dataclass(cls: type) -> type:
    names = list(cls.__dict__.get("__annotations__", {}))
    defaults = {name: cls.__dict__.get(name, _NO_DEFAULT) for name in names}
    namespace: Dict[str, Any] = {"_FROM_FACTORY": _FROM_FACTORY}
    params, body = [], []
    for name in names:
        default = defaults[name]
        if isinstance(default, _Factory):
            # As with dataclasses, the marker does not stay a class attribute.
            delattr(cls, name)
            namespace[f"_make_{name}"] = default.make
            params.append(f"{name}=_FROM_FACTORY")
            body.append(f"    self.{name} = _make_{name}() if {name} is _FROM_FACTORY else {name}")
        else:
            if default is _NO_DEFAULT:
                params.append(name)
            else:
                namespace[f"_default_{name}"] = default
                params.append(f"{name}=_default_{name}")
            body.append(f"    self.{name} = {name}")
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    # The source of a real function, as dataclasses writes it, so that the
    # signature names each field with its default.
    exec(f"def __init__(self, {', '.join(params)}):\n" + "\n".join(body or ["    pass"]), namespace)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = init  # type: ignore[misc]

    def __repr__(self: Any) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
        return f"{type(self).__qualname__}({shown})"

    def __eq__(self: Any, other: Any) -> Any:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in names)

    __repr__.__qualname__ = f"{cls.__qualname__}.__repr__"
    __eq__.__qualname__ = f"{cls.__qualname__}.__eq__"
    cls.__repr__ = __repr__  # type: ignore[method-assign]
    cls.__eq__ = __eq__  # type: ignore[method-assign]
    # Equal but mutable: not hashable, as dataclasses makes it.
    cls.__hash__ = None  # type: ignore[assignment]
    cls.__match_args__ = tuple(names)  # type: ignore[attr-defined]
    record = _Record(cls, names, defaults)
    cls.__dataclass_fields__ = _Lazy(record, "__dataclass_fields__")  # type: ignore[attr-defined]
    cls.__dataclass_params__ = _Lazy(record, "__dataclass_params__")  # type: ignore[attr-defined]
    return cls
