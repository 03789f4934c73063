"""Load YAML into pydantic models with errors that name the file, the line and the key.

Both scenarios and simulator profiles go through :func:`load_model`, so every config
error in the project reads the same way::

    scenarios/demo.yaml:14: suppliers[0].products[0].face_value: Input should be ...

A model validator that checks several fields at once raises :class:`LocatedValueError`
with the path of the offending key (relative to the model), so cross-field errors name
the right line too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from harness.errors import ConfigError

M = TypeVar("M", bound=BaseModel)
Loc = tuple[int | str, ...]


class LocatedValueError(ValueError):
    """Raised by a model validator to blame a key below the model, e.g. ``("products", 1, "sku")``.

    pydantic reports the model's own location; :func:`validate_located` appends ``loc``.
    """

    def __init__(self, message: str, loc: Sequence[int | str]) -> None:
        super().__init__(message)
        self.loc: Loc = tuple(loc)


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping key and sequence item."""


def _compose_lines(node: yaml.Node, loc: Loc, lines: dict[Loc, int],
                   duplicates: list[tuple[Loc, int]]) -> None:
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[object] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen and key != "<<":
                duplicates.append(((*loc, key), key_node.start_mark.line + 1))
            seen.add(key)
            lines[(*loc, key)] = key_node.start_mark.line + 1
            _compose_lines(value_node, (*loc, key), lines, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*loc, index)] = item.start_mark.line + 1
            _compose_lines(item, (*loc, index), lines, duplicates)


def read_yaml(path: Path, *, error: type[ConfigError] = ConfigError
              ) -> tuple[Any, dict[Loc, int]]:
    """Parse a YAML file; return the data and a map from key paths to line numbers.

    A key written twice in one mapping is an error (plain YAML would keep the last).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise error(f"cannot read: {reason}; check the path", path=str(path)) from exc
    try:
        node = yaml.compose(text, Loader=_LineLoader)
        data = yaml.load(text, Loader=_LineLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise error(f"not valid YAML: {problem}; fix the syntax at this line",
                    path=str(path), line=line) from exc
    lines: dict[Loc, int] = {}
    duplicates: list[tuple[Loc, int]] = []
    if node is not None:
        _compose_lines(node, (), lines, duplicates)
    if duplicates:
        loc, line = duplicates[0]
        raise error("key written twice in the same mapping; keep one of them",
                    path=str(path), line=line, key=format_loc(loc))
    return data, lines


def format_loc(loc: Sequence[int | str]) -> str:
    """``("suppliers", "acme", "products", 0, "sku")`` → ``suppliers.acme.products[0].sku``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def line_of(loc: Sequence[int | str], lines: dict[Loc, int]) -> int | None:
    """The line of the deepest part of ``loc`` that exists in the file."""
    parts = tuple(loc)
    while parts:
        if parts in lines:
            return lines[parts]
        parts = parts[:-1]
    return lines.get(())


def _hint(error_type: str, msg: str, ctx: dict[str, Any] | None) -> str:
    if error_type == "extra_forbidden":
        return "unknown key; remove it or check its spelling against `trialbench schema`"
    if error_type == "missing":
        return "required key is missing; add it"
    if error_type in ("value_error", "assertion_error") and ctx and "error" in ctx:
        return str(ctx["error"])  # our validators word their own "what; fix" message
    return msg


def load_model(path: Path, model: type[M], *, error: type[ConfigError] = ConfigError,
               context: dict[str, Any] | None = None) -> M:
    """Read ``path`` and validate it as ``model``; raise ``error`` naming file, line and key.

    Only the first validation error is reported, so the message stays one line.
    """
    data, lines = read_yaml(path, error=error)
    return validate_located(data, lines, str(path), model, error=error, context=context)


def validate_located(data: Any, lines: dict[Loc, int], source: str, model: type[M], *,
                     error: type[ConfigError] = ConfigError,
                     context: dict[str, Any] | None = None) -> M:
    """Validate already-parsed ``data`` as ``model``; errors name ``source``, line and key.

    ``lines`` is the map :func:`read_yaml` returns (empty if the data has no file).
    """
    if data is None:
        raise error("the file is empty; see `trialbench schema` for what to write",
                    path=source, line=1)
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(p for p in first["loc"] if isinstance(p, int | str))
        ctx = first.get("ctx")
        if ctx and isinstance(ctx.get("error"), LocatedValueError):
            loc = (*loc, *ctx["error"].loc)
        # pydantic appends the failing validator's name for unions/functions; keep real keys
        while loc and isinstance(loc[-1], str) and loc not in lines and loc[:-1] in lines \
                and "[" in loc[-1]:
            loc = loc[:-1]
        raise error(_hint(first["type"], first["msg"], ctx), path=source,
                    line=line_of(loc, lines), key=format_loc(loc) or None) from exc
