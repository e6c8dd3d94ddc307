"""TOML configuration files read into typed dataclasses, with errors that name file and key."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import sys
import textwrap
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from synthrank.errors import SynthrankError
from synthrank.fileio import read_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

T = TypeVar("T")


def read_toml(path: str | Path) -> dict[str, Any]:
    """The TOML file at ``path`` as a dict (a leading byte-order mark dropped); a syntax error
    names the file, line and column."""
    path = Path(path)
    if not path.is_file():
        raise SynthrankError(f"{path}: config file not found")
    try:
        return tomllib.loads(read_text(path))
    except tomllib.TOMLDecodeError as exc:
        raise SynthrankError(f"{path}: not valid TOML ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise SynthrankError(f"{path}: not UTF-8 text") from exc


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation)).replace("typing.", "")


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """``value`` checked against a simple annotation: scalars, ``X | None``, tuples of scalars,
    and dataclasses (a table, read by :func:`from_mapping`)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _coerce(value, option, where)
            except SynthrankError as exc:
                errors.append(str(exc))
        raise SynthrankError(errors[0])
    if origin is typing.Literal:
        allowed = typing.get_args(annotation)
        if value not in allowed:
            choices = ", ".join(repr(a) for a in allowed)
            raise SynthrankError(f"{where}: expected one of {choices}, got {value!r}")
        return value
    if origin is tuple:
        (item_type, *_rest) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise SynthrankError(f"{where}: expected a list, got {type(value).__name__}")
        return tuple(_coerce(v, item_type, f"{where}[{i}]") for i, v in enumerate(value))
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float, str, bool):
        if isinstance(value, bool) != (annotation is bool) or not isinstance(value, annotation):
            raise SynthrankError(
                f"{where}: expected {_type_name(annotation)}, got {type(value).__name__} {value!r}"
            )
        return value
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, Mapping):
            keys = ", ".join(f.name for f in dataclasses.fields(annotation))
            raise SynthrankError(
                f"{where}: expected a table (keys: {keys}), got {type(value).__name__} {value!r}"
            )
        return from_mapping(annotation, value, where)
    if annotation is Path:
        if not isinstance(value, str):
            raise SynthrankError(f"{where}: expected a path string, got {type(value).__name__}")
        return Path(value)
    return value


def from_mapping(
    cls: type[T], values: Mapping[str, Any], where: str, *, nested: Mapping[str, Any] = ()
) -> T:
    """Build dataclass ``cls`` from ``values``; unknown keys and wrong types raise errors that
    name ``where`` (e.g. ``experiment.toml, [generate]``) and the key. ``nested`` gives
    already-built values for fields that are themselves tables or lists of tables."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise SynthrankError(
            f"{where}: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(fields))}"
        )
    missing = [
        name
        for name, f in fields.items()
        if f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
        and name not in values
        and name not in nested
    ]
    if missing:
        raise SynthrankError(f"{where}: missing key {missing[0]!r}")
    kwargs: dict[str, Any] = dict(nested)
    for name, value in values.items():
        if name in nested:
            continue
        kwargs[name] = _coerce(value, hints[name], f"{where}, key {name!r}")
    return cls(**kwargs)


def field_docs(cls: type) -> dict[str, str]:
    """Each attribute of class ``cls`` that has a docstring (a string literal right after its
    annotated assignment) -> that docstring, cleaned of indentation; attributes of base classes
    first, a subclass's own docstring replacing a base's. :class:`SynthrankError` when the
    source of ``cls`` or of a base cannot be read (a class made at run time, a module shipped
    without its ``.py`` file)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or klass.__module__ == "builtins":
            continue
        docs.update(_own_field_docs(klass))
    return docs


def _own_field_docs(cls: type) -> dict[str, str]:
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError) as exc:
        raise SynthrankError(
            f"cannot read the source of {cls.__module__}.{cls.__qualname__} for its field "
            f"docstrings ({exc}); install synthrank with its .py files"
        ) from exc
    tree = ast.parse(source)
    node = next((n for n in tree.body if isinstance(n, ast.ClassDef)), None)
    if node is None:
        raise SynthrankError(f"{cls.__module__}.{cls.__qualname__}: its source holds no class")
    docs = {}
    for statement, following in zip(node.body, node.body[1:], strict=False):
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[statement.target.id] = inspect.cleandoc(following.value.value)
    return docs


_SCALAR_NAMES = {int: "integer", float: "number", str: "string", bool: "boolean", Path: "path"}
_PLURALS = {"integer": "integers", "number": "numbers", "string": "strings", "boolean": "booleans"}


def type_text(annotation: Any) -> str:
    """A field's annotation as a config file's reader sees it: ``integer``, ``number``,
    ``string``, ``list of strings``, ``"torch" or "openvino"``, ``table of strings``; the
    ``None`` of ``X | None`` is left out (a key left unset)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [type_text(a) for a in typing.get_args(annotation) if a is not type(None)]
        return " or ".join(options)
    if origin is typing.Literal:
        choices = [toml_value(a) for a in typing.get_args(annotation)]
        return ", ".join(choices[:-1]) + f" or {choices[-1]}" if len(choices) > 1 else choices[0]
    if origin in (tuple, list):
        item = type_text(typing.get_args(annotation)[0])
        return f"list of {_PLURALS.get(item, item)}"
    if origin is dict:
        item = type_text(typing.get_args(annotation)[1])
        return f"table of {_PLURALS.get(item, item)}"
    if dataclasses.is_dataclass(annotation):
        return "table"
    return _SCALAR_NAMES.get(annotation, _type_name(annotation))


def toml_value(value: Any) -> str:
    """``value`` as TOML writes it: ``true``, ``0.05``, ``"text"``, ``["a", "b"]``,
    ``{"beir:arguana" = "dev"}``; a dataclass as an inline table of its fields.
    :class:`SynthrankError` for ``None``, which TOML cannot write (leave the key out)."""
    if value is None:
        raise SynthrankError("TOML has no null: leave the key out")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if dataclasses.is_dataclass(value):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        items = [f"{_toml_key(k)} = {toml_value(v)}" for k, v in value.items() if v is not None]
        return "{" + ", ".join(items) + "}"
    raise SynthrankError(f"cannot write {type(value).__name__} {value!r} as TOML")


def _toml_key(key: Any) -> str:
    text = str(key)
    bare = text and all(c.isascii() and (c.isalnum() or c in "-_") for c in text)
    return text if bare else json.dumps(text, ensure_ascii=False)
