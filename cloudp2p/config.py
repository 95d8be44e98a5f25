"""Strict TOML configuration.

Every daemon reads one TOML file and validates all of it before it starts: an
unknown section or key, a value of the wrong type or out of range, or a missing
required key stops the daemon with a ``ConfigError`` that names the file, the
section and the key. A typo must never silently fall back to a default.

Each area of the code owns one section and declares it as one attrs class, the
section's schema and its value at once (``cloudp2p/<area>/config.py``)::

    @section("transfer", doc="Reliable chunked transfers over UDP.")
    class TransferConfig:
        chunk_size: int = setting(1200, in_range(512, 65000), "payload bytes per datagram")

Each ``setting`` is a key of the file: its TOML types (from the default unless
given), its default (none: required), its check and its doc live in the field's
metadata. Fields that are not settings are tunables of the code, not keys. A
daemon composes the sections it needs into a ``Schema``; loading returns one
instance per section, so the defaults exist once, in the class.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import tomllib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs

from cloudp2p.errors import ConfigError

_REQUIRED = object()
SETTING = "cloudp2p.setting"  # the attrs metadata key that holds a setting's ``Field``
T = TypeVar("T")


@attrs.frozen
class Field:
    """One key: its accepted types, default (absent means required) and an extra check.

    ``check`` returns the (possibly converted) value or raises ``ValueError``
    whose text says what is expected.
    """

    types: type | tuple[type, ...]
    default: Any = _REQUIRED
    check: Callable[[Any], Any] | None = None
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


@attrs.frozen
class Section:
    """A named table of fields. ``required`` sections must appear in the file.

    ``settings`` is the class a validated table becomes (``section`` sets it)."""

    name: str
    fields: Mapping[str, Field]
    required: bool = False
    doc: str = ""
    settings: type | None = None

    def build(self, table: Mapping[str, Any]) -> Any:
        """The section's settings object from a validated table (the table itself if it has no class)."""
        if self.settings is None:
            return dict(table)
        return self.settings(**{key: table[key] for key in self.fields})


def _natural_types(default: Any) -> type | tuple[type, ...]:
    if isinstance(default, bool):
        return bool
    if isinstance(default, float):
        return (int, float)
    for kind in (int, str, list, dict):
        if isinstance(default, kind):
            return kind
    raise TypeError(f"give the TOML types of a setting whose default is {default!r}")


def setting(
    default: Any = _REQUIRED,
    check: Callable[[Any], Any] | None = None,
    doc: str = "",
    *,
    types: type | tuple[type, ...] | None = None,
) -> Any:
    """A key of a config section, declared as a field of the section's class.

    ``types`` are what TOML may hold (from the default when not given: a float default
    accepts integers too); no default makes the key required. ``check`` returns the value
    to keep (it may convert it) or raises ``ValueError`` saying what is expected.
    """
    if types is None:
        if default is _REQUIRED:
            raise TypeError("a required setting names its TOML types")
        types = _natural_types(default)
    metadata = {SETTING: Field(types, default, check, doc)}
    if default is _REQUIRED:
        return attrs.field(metadata=metadata)
    if isinstance(default, list | dict):
        return attrs.field(factory=lambda: copy.deepcopy(default), metadata=metadata)
    return attrs.field(default=default, metadata=metadata)


def section(name: str, *, required: bool = False, doc: str = "") -> Callable[[type[T]], type[T]]:
    """Class decorator: a frozen attrs class whose ``setting`` fields are the keys of ``[name]``.

    The class gets ``SECTION`` (its ``Section``) and stays usable on its own: the defaults
    of the file are the class's defaults, and nothing else declares them again.
    """

    def make(cls: type[T]) -> type[T]:
        built = attrs.frozen(kw_only=True)(cls)
        fields = {f.name: f.metadata[SETTING] for f in attrs.fields(built) if SETTING in f.metadata}
        built.SECTION = Section(name, fields, required, doc or (cls.__doc__ or "").strip(), built)
        return built

    return make


@attrs.frozen
class Schema:
    sections: tuple[Section, ...]

    def load(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Read and validate ``path``; return ``{section: settings object}`` with defaults filled in."""
        return self.validate(read_toml(path), os.fspath(path))

    def validate(self, raw: Mapping[str, Any], origin: str = "<config>") -> dict[str, Any]:
        """``{section name: settings object}`` (see ``tables`` for the checked tables themselves)."""
        tables = self.tables(raw, origin)
        return {s.name: s.build(tables[s.name]) for s in self.sections}

    def tables(self, raw: Mapping[str, Any], origin: str = "<config>") -> dict[str, dict[str, Any]]:
        """``{section: {key: value}}``: every key checked, defaults filled in."""
        known = {s.name: s for s in self.sections}
        for name, value in raw.items():
            if name not in known:
                raise ConfigError(
                    f"{origin}: unknown section or key [{name}]; expected one of: {', '.join(sorted(known))}"
                )
            if not isinstance(value, dict):
                raise ConfigError(f"{origin}: [{name}] must be a table")
        out: dict[str, dict[str, Any]] = {}
        for section in self.sections:
            table = raw.get(section.name)
            if table is None and section.required:
                raise ConfigError(f"{origin}: missing required section [{section.name}]")
            out[section.name] = _validate_section(section, table or {}, origin)
        return out


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed TOML file, or a ``ConfigError`` that names the file and what is wrong."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def _validate_section(section: Section, table: Mapping[str, Any], origin: str) -> dict[str, Any]:
    for key in table:
        if key not in section.fields:
            raise ConfigError(
                f"{origin}: [{section.name}] unknown key {key!r}; "
                f"expected one of: {', '.join(sorted(section.fields))}"
            )
    out: dict[str, Any] = {}
    for key, field in section.fields.items():
        where = f"{origin}: [{section.name}] {key}"
        if key not in table:
            if field.required:
                raise ConfigError(f"{where}: missing required key")
            out[key] = field.default
            continue
        value = table[key]
        # bool is an int in Python; a config that says `port = true` is a mistake.
        if isinstance(value, bool) and bool not in _as_tuple(field.types):
            raise ConfigError(f"{where}: expected {_type_names(field.types)}, got a boolean")
        if not isinstance(value, field.types):
            raise ConfigError(f"{where}: expected {_type_names(field.types)}, got {type(value).__name__}")
        if field.check is not None:
            try:
                value = field.check(value)
            except ValueError as e:
                raise ConfigError(f"{where}: {e}") from None
        if isinstance(value, int) and not isinstance(value, bool) and float in _as_tuple(field.types):
            value = float(value)  # `timeout = 1` in a file is a duration of 1.0 s
        out[key] = value
    return out


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _type_names(types: type | tuple[type, ...]) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }
    return " or ".join(names.get(t, t.__name__) for t in _as_tuple(types))


# -- reusable checks -------------------------------------------------------------------------------


def positive(value: float) -> float:
    if value <= 0:
        raise ValueError(f"must be greater than 0, got {value}")
    return value


def seconds(value: float) -> float:
    """A positive duration, as a float."""
    return float(positive(value))


def at_least(low: int, unit: str = "") -> Callable[[int], int]:
    def check(value: int) -> int:
        if value < low:
            raise ValueError(f"must be at least {low}{' ' + unit if unit else ''}, got {value}")
        return value

    return check


def non_negative(value: float) -> float:
    if value < 0:
        raise ValueError(f"must be 0 or more, got {value}")
    return value


def in_range(low: float, high: float) -> Callable[[float], float]:
    def check(value: float) -> float:
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, got {value}")
        return value

    return check


def one_of(*choices: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return value

    return check


def parse_hostport(value: str, *, allow_port_zero: bool = False) -> tuple[str, int]:
    """``"127.0.0.1:9001"`` -> ``("127.0.0.1", 9001)``; ``"[::1]:9001"`` for IPv6.

    Hosts must be IP addresses: name resolution would block the reactor and
    make a node's identity depend on DNS.
    """
    if not isinstance(value, str) or ":" not in value:
        raise ValueError(f"expected host:port, got {value!r}")
    if value.startswith("["):
        host, sep, port_text = value[1:].partition("]:")
        if not sep:
            raise ValueError(f"expected [ipv6]:port, got {value!r}")
    else:
        host, _, port_text = value.rpartition(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"host in {value!r} must be an IP address such as 127.0.0.1") from None
    if not port_text.isdigit():
        raise ValueError(f"port in {value!r} must be a number")
    port = int(port_text)
    low = 0 if allow_port_zero else 1
    if not low <= port <= 65535:
        raise ValueError(f"port in {value!r} must be between {low} and 65535")
    return host, port


def ip_address(value: str) -> str:
    """An IP address (never a name: resolving one would block the reactor), kept as text."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"must be an IP address such as 127.0.0.1, got {value!r}") from None
    return value


def hostport(value: str) -> tuple[str, int]:
    return parse_hostport(value)


def hostport_or_zero(value: str) -> tuple[str, int]:
    return parse_hostport(value, allow_port_zero=True)


def format_hostport(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
