"""Validated YAML loading: every error names the file, the field and the bad value.

Configs are read with ``yaml.safe_load`` (no tags that build objects) and walked through a
:class:`Section`, which knows where it came from. Each accessor checks type and bounds and, on
failure, raises :class:`ConfigError` whose message reads ``FILE: FIELD: what is wrong (got X)``,
so a user can fix the file without a traceback.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config, profile or trace file that cannot be used as it is."""

    def __init__(self, source: str | os.PathLike[str], field: str | None, message: str):
        self.source = str(source)
        self.field = field
        self.message = message
        where = f"{self.source}: {field}" if field else self.source
        super().__init__(f"{where}: {message}")


def one_line(exc: BaseException) -> str:
    """``exc`` in one line: a ConfigError's own message (it names file, field and value), else
    ``Type: first line`` (cluster engines' messages run over many lines)."""
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    first = lines[0].strip() if lines else ""
    if isinstance(exc, ConfigError) and first:
        return first
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


_MISSING = object()


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def read_bytes(path: Path, expected: str) -> bytes:
    """The bytes of ``path``; a missing, directory or unreadable path is a ConfigError naming
    it (``expected`` says what should have been there, e.g. "a YAML file")."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(path, None, "file not found") from None
    except IsADirectoryError:
        raise ConfigError(path, None, f"is a directory, expected {expected}") from None
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read: {exc.strerror or exc}") from None


def load_yaml(path: str | os.PathLike[str]) -> Section:
    """Read a YAML mapping from ``path`` into a :class:`Section`."""
    p = Path(path)
    raw = read_bytes(p, "a YAML file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(p, None, "not a UTF-8 text file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(p, where, f"invalid YAML: {problem}") from None
    if data is None:
        raise ConfigError(p, None, "file is empty")
    if not isinstance(data, Mapping):
        raise ConfigError(p, None, f"expected a mapping at the top level, got {type(data).__name__}")
    return Section(data, str(p))


class Section:
    """A mapping from a config file, with typed and bounded accessors.

    ``prefix`` is the dotted path of this section inside the file, used in error messages.
    """

    def __init__(self, data: Mapping[str, Any], source: str, prefix: str = ""):
        self.data = data
        self.source = source
        self.prefix = prefix

    # -- plumbing ------------------------------------------------------------------------------
    def path(self, key: str | int) -> str:
        if isinstance(key, int):
            return f"{self.prefix}[{key}]"
        return f"{self.prefix}.{key}" if self.prefix else key

    def error(self, key: str | int | None, message: str) -> ConfigError:
        return ConfigError(self.source, self.path(key) if key is not None else self.prefix or None, message)

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def keys(self) -> Iterable[str]:
        return self.data.keys()

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        if key in self.data and self.data[key] is not None:
            return self.data[key]
        if default is _MISSING:
            raise self.error(key, "missing required field")
        return default

    def check_keys(self, allowed: Iterable[str]) -> None:
        """Reject fields this section does not know (catches typos such as ``slot_ms``).

        ``source``, ``notes`` and any ``*_source`` field are always allowed: configs cite where
        each figure comes from right beside it.
        """
        allowed = set(allowed)
        for key in self.data:
            if key in ("source", "notes") or str(key).endswith("_source"):
                continue
            if key not in allowed:
                raise self.error(str(key), f"unknown field (known: {', '.join(sorted(allowed))})")

    # -- scalars -------------------------------------------------------------------------------
    def number(
        self,
        key: str,
        default: Any = _MISSING,
        *,
        min: float | None = None,
        max: float | None = None,
        positive: bool = False,
    ) -> float:
        value = self.raw(key, default)
        if value is None:
            return value
        return check_number(value, self.error_for(key), min=min, max=max, positive=positive)

    def integer(self, key: str, default: Any = _MISSING, *, min: int | None = None, max: int | None = None) -> int:
        value = self.raw(key, default)
        if value is None:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise self.error(key, f"expected an integer, got {_show(value)}")
        if min is not None and value < min:
            raise self.error(key, f"must be >= {min}, got {value}")
        if max is not None and value > max:
            raise self.error(key, f"must be <= {max}, got {value}")
        return value

    def string(self, key: str, default: Any = _MISSING, *, choices: Sequence[str] | None = None) -> str:
        value = self.raw(key, default)
        if value is None:
            return value
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {_show(value)}")
        if choices is not None and value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}; got {_show(value)}")
        return value

    def boolean(self, key: str, default: Any = _MISSING) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {_show(value)}")
        return value

    def numbers(
        self,
        key: str,
        default: Any = _MISSING,
        *,
        min: float | None = None,
        positive: bool = False,
        ascending: bool = False,
        nonempty: bool = True,
    ) -> list[float]:
        value = self.raw(key, default)
        if value is None:
            return value
        if not isinstance(value, list):
            raise self.error(key, f"expected a list of numbers, got {_show(value)}")
        if nonempty and not value:
            raise self.error(key, "must not be empty")
        out = []
        for i, item in enumerate(value):
            out.append(check_number(item, lambda m, i=i: self.error(f"{key}[{i}]", m), min=min, positive=positive))
        if ascending and any(b <= a for a, b in zip(out, out[1:])):
            raise self.error(key, "must be strictly ascending")
        return out

    def section(self, key: str, default: Any = _MISSING) -> Section:
        value = self.raw(key, default)
        if not isinstance(value, Mapping):
            raise self.error(key, f"expected a mapping, got {_show(value)}")
        return Section(value, self.source, self.path(key))

    def sections(self, key: str) -> list[Section]:
        value = self.raw(key)
        if not isinstance(value, list) or not value:
            raise self.error(key, "expected a non-empty list of mappings")
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, Mapping):
                raise self.error(f"{key}[{i}]", f"expected a mapping, got {_show(item)}")
            out.append(Section(item, self.source, f"{self.path(key)}[{i}]"))
        return out

    def error_for(self, key: str):
        return lambda message: self.error(key, message)


def check_number(value: Any, fail, *, min: float | None = None, max: float | None = None, positive: bool = False) -> float:
    """Check one number; ``fail(message)`` builds the exception to raise.

    A string that reads as a number is accepted: PyYAML (YAML 1.1) loads ``1e9`` or ``8.2e9``
    (no sign in the exponent) as a string, and users should not have to know that.
    """
    if isinstance(value, str):
        try:
            value = float(value.replace("_", ""))
        except ValueError:
            raise fail(f"expected a number, got {_show(value)}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise fail(f"expected a number, got {_show(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise fail(f"must be finite, got {value}")
    if positive and value <= 0:
        raise fail(f"must be > 0, got {value:g}")
    if min is not None and value < min:
        raise fail(f"must be >= {min:g}, got {value:g}")
    if max is not None and value > max:
        raise fail(f"must be <= {max:g}, got {value:g}")
    return value


CONFIGS_ENV = "CUTEDGE_CONFIGS"
CONFIGS_PACKAGE = "cutedge.configs"


def configs_dir() -> Path:
    """The folder of built-in configs: ``$CUTEDGE_CONFIGS`` if set, else the package data of
    ``cutedge.configs`` (the repository's ``configs/`` folder, installed with the package).

    Found through ``importlib.resources``, so a wheel, an sdist build and an editable install
    all work. pip always unpacks a wheel into files; a package that is not on the file system
    (a zip import) is a ConfigError that says to set ``$CUTEDGE_CONFIGS``.
    """
    env = os.environ.get(CONFIGS_ENV)
    if env:
        return Path(env)
    try:
        root = resources.files(CONFIGS_PACKAGE)
    except ModuleNotFoundError:
        # an editable install made before the configs became package data
        raise ConfigError(
            CONFIGS_PACKAGE, None, "built-in configs are not installed (reinstall: pip install -e .)"
        ) from None
    if not isinstance(root, Path):
        raise ConfigError(
            CONFIGS_PACKAGE, None, f"built-in configs are not files on disk; set {CONFIGS_ENV}=DIR"
        )
    return root


def resolve_named(kind: str, name_or_path: str) -> Path:
    """Turn ``NAME`` (a built-in ``configs/<kind>/NAME.yaml``) or a path into a file path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    candidate = configs_dir() / kind / f"{name_or_path}.yaml"
    if candidate.exists():
        return candidate
    known = sorted(f.stem for f in (configs_dir() / kind).glob("*.yaml"))
    raise ConfigError(
        name_or_path, None, f"no such {kind[:-1] if kind.endswith('s') else kind} (built-in: {', '.join(known) or 'none'})"
    )
