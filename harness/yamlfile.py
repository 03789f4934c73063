"""Load YAML into pydantic models with errors that name the file, the line and the key.

Both scenarios and simulator profiles go through :func:`load_model`, so every config
error in the project reads the same way::

    scenarios/demo.yaml:14: suppliers[0].products[0].face_value: Input should be ...

A model validator that checks several fields at once raises :class:`LocatedValueError`
with the path of the offending key (relative to the model), so cross-field errors name
the right line too.

A file is refused, with one line, before it can cost much time or memory:

- larger than :data:`MAX_FILE_BYTES` (256 KiB; scenarios and profiles are a few KiB);
- nested deeper than :data:`MAX_DEPTH` levels, counting what aliases expand to;
- aliases that expand to more than :data:`MAX_ALIAS_NODES` nodes in all (a "billion
  laughs" bomb), or an alias inside the node it names;
- more than :data:`MAX_NODES` nodes (keys, values and items), aliases expanded;
- a number written with more than :data:`MAX_NUMBER_CHARS` characters, or a value YAML
  cannot build (such as the date ``2026-13-45``).

Aliases are counted as the composer meets them, while every alias is still one shared
node, so a bomb is refused before anything is expanded. PyYAML's pure-Python parser takes
about 50 µs a node, so the node and size limits also keep the worst file to about a second.

:class:`Bounded` marks a number field's sane range; a value outside it, or ``true`` where
a count is meant, is refused with a message that says the range.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar, cast

import yaml
from pydantic import BaseModel, GetCoreSchemaHandler, ValidationError
from pydantic_core import core_schema

from harness.errors import ConfigError

M = TypeVar("M", bound=BaseModel)
Loc = tuple[int | str, ...]

MAX_FILE_BYTES = 262_144
"""Largest scenario or profile file read, bytes (256 KiB; the largest shipped is 6 KiB)."""
MAX_DEPTH = 64
"""Deepest nesting of mappings and sequences, counting what aliases expand to."""
MAX_ALIAS_NODES = 10_000
"""Most nodes that aliases may expand to in one file, all aliases together."""
MAX_NODES = 20_000
"""Most nodes in one file, aliases expanded (the largest shipped file has about 400)."""
MAX_NUMBER_CHARS = 100
"""Longest number YAML will build (a longer one is refused, not computed)."""

_NUMBER_TAGS = frozenset({"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"})


class LocatedValueError(ValueError):
    """Raised by a model validator to blame a key below the model, e.g. ``("products", 1, "sku")``.

    pydantic reports the model's own location; :func:`validate_located` appends ``loc``.
    """

    def __init__(self, message: str, loc: Sequence[int | str]) -> None:
        super().__init__(message)
        self.loc: Loc = tuple(loc)


_RANGE_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than",
                           "less_than_equal", "finite_number"})


@dataclass(frozen=True)
class Bounded:
    """The sane range of a number field: ``Annotated[int, Bounded(1, 1000, "count")]``.

    Applies to ``int``, ``float`` and ``Decimal``. It sets the bounds in the schema (and in
    ``trialbench schema``), refuses infinity and NaN, refuses ``true``/``false`` and, for an
    ``int``, a float such as ``2.0``; every refusal says the range::

        trial.spending_cap: 1e400 is not a sane amount; write a number between 0.01 and 10000000

    Strings still go through pydantic's usual parsing, so ``${VAR}`` may give a number.
    """

    low: int | float | Decimal
    """The least sane value (excluded if ``low_open``)."""
    high: int | float | Decimal
    """The greatest sane value (included)."""
    what: str
    """What the number is, for the message: ``count``, ``amount``, ``duration in seconds``."""
    low_open: bool = False
    """``low`` itself is not sane: the value must be above it."""
    places: int | None = None
    """Most decimal places (for money)."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler
                                     ) -> core_schema.CoreSchema:
        inner = cast(dict[str, Any], dict(handler(source)))
        if inner["type"] not in ("int", "float", "decimal"):
            raise TypeError(f"Bounded applies to int, float or Decimal, not {inner['type']}")
        whole = inner["type"] == "int"
        inner["gt" if self.low_open else "ge"] = self.low
        inner["le"] = self.high
        if not whole:
            inner["allow_inf_nan"] = False
        if self.places is not None:
            inner["decimal_places"] = self.places

        def validate(value: Any, handler: core_schema.ValidatorFunctionWrapHandler) -> Any:
            return self._validate(value, handler, whole=whole)

        return core_schema.no_info_wrap_validator_function(
            validate, cast(core_schema.CoreSchema, inner))

    def _validate(self, value: Any, handler: core_schema.ValidatorFunctionWrapHandler, *,
                  whole: bool) -> Any:
        number = "a whole number" if whole else "a number"
        low = "above " if self.low_open else "between "
        fix = f"write {number} {low}{_plain(self.low)}" + (
            " and at most " if self.low_open else " and ") + _plain(self.high)
        if isinstance(value, bool):
            raise ValueError(f"{str(value).lower()} is not {_article(self.what)}; {fix}")
        if whole and isinstance(value, float | Decimal):
            raise ValueError(f"{_shown(value)} is not a whole number; {fix}")
        try:
            return handler(value)
        except ValidationError as exc:
            if exc.errors()[0]["type"] not in _RANGE_ERRORS:
                raise
            raise ValueError(f"{_shown(value)} is not a sane {self.what}; {fix}") from None


def _plain(bound: int | float | Decimal) -> str:
    """A bound as one would write it in YAML: ``10000000``, ``0.01``, ``0.5``."""
    if isinstance(bound, float) and bound.is_integer():
        return str(int(bound))
    return str(bound)


def _article(what: str) -> str:
    return ("an " if what[:1] in "aeiou" else "a ") + what


def _shown(value: object) -> str:
    """The input as written, cut short; a ``str`` subclass shows its ``repr`` (a template)."""
    text = value if type(value) is str else (
        repr(value) if isinstance(value, str) else str(value))
    return text if len(text) <= 40 else text[:37] + "..."


class _Refused(Exception):
    """A file over one of the loader's limits; ``read_yaml`` turns it into a ConfigError."""

    def __init__(self, message: str, mark: object) -> None:
        super().__init__(message)
        line = getattr(mark, "line", None)  # a yaml.Mark counts lines from 0
        self.line = line + 1 if isinstance(line, int) else None


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that refuses bombs while composing, and bad scalars while constructing.

    For every composed node it keeps the number of nodes and the depth it expands to
    (aliases included), so an alias is judged by what it would expand to without
    expanding it.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0
        self._alias_nodes = 0
        self._extent: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes, height)

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self._peek()
            target = self.anchors.get(event.anchor)
            if target is not None:  # an undefined alias is PyYAML's error to report
                extent = self._extent.get(id(target))
                if extent is None:
                    raise _Refused(f"alias *{event.anchor} is inside the node it names; a "
                                   "scenario has no recursive structures, remove the alias",
                                   event.start_mark)
                nodes, height = extent
                self._alias_nodes += nodes
                if self._alias_nodes > MAX_ALIAS_NODES:
                    raise _Refused(f"aliases expand to more than {MAX_ALIAS_NODES:,} nodes "
                                   "(a YAML alias bomb?); write the values out instead",
                                   event.start_mark)
                self._count(nodes, event.start_mark)
                if self._depth + height > MAX_DEPTH:
                    raise _Refused(f"alias *{event.anchor} nests the file more than "
                                   f"{MAX_DEPTH} levels deep; flatten it", event.start_mark)
            return super().compose_node(parent, index)
        self._depth += 1
        mark = self._peek().start_mark
        if self._depth > MAX_DEPTH:
            raise _Refused(f"nested more than {MAX_DEPTH} levels deep; flatten it", mark)
        self._count(1, mark)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        assert node is not None
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        extents = [self._extent[id(child)] for child in children]
        self._extent[id(node)] = (1 + sum(n for n, _ in extents),
                                  1 + max((h for _, h in extents), default=0))
        return node

    def _peek(self) -> yaml.NodeEvent:
        # PyYAML's stub leaves Parser.peek_event untyped; compose_node only meets node events
        event: yaml.NodeEvent = self.peek_event()  # type: ignore[no-untyped-call]
        return event

    def _count(self, nodes: int, mark: object) -> None:
        self._nodes += nodes
        if self._nodes > MAX_NODES:
            raise _Refused(f"more than {MAX_NODES:,} keys, values and items (aliases "
                           "expanded); a scenario or profile has a few hundred, check the file",
                           mark)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        if node.tag in _NUMBER_TAGS and len(node.value) > MAX_NUMBER_CHARS:
            raise _Refused(f"a number written with {len(node.value):,} characters, more than "
                           f"{MAX_NUMBER_CHARS}; write a shorter number (or quote text)",
                           node.start_mark)
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:  # e.g. date(2026, 13, 45) in PyYAML
            raise _Refused(f"YAML cannot build this value ({exc}); fix it, or quote it if it "
                           "is text", node.start_mark) from exc


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

    A key written twice in one mapping is an error (plain YAML would keep the last). So is
    a file over the limits in the module docstring.
    """
    text = _read_text(path, error)
    loader = _LineLoader(text)  # a SafeLoader subclass: no arbitrary objects
    try:
        node = loader.get_single_node()
        lines: dict[Loc, int] = {}
        duplicates: list[tuple[Loc, int]] = []
        if node is not None:  # before constructing, which flattens merge keys (<<) in place
            _compose_lines(node, (), lines, duplicates)
        if duplicates:
            loc, line = duplicates[0]
            raise error("key written twice in the same mapping; keep one of them",
                        path=str(path), line=line, key=format_loc(loc))
        data = loader.construct_document(node) if node is not None else None
    except _Refused as exc:
        raise error(str(exc), path=str(path), line=exc.line) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise error(f"not valid YAML: {problem}; fix the syntax at this line", path=str(path),
                    line=mark.line + 1 if mark is not None else None) from exc
    finally:
        loader.dispose()
    return data, lines


def _read_text(path: Path, error: type[ConfigError]) -> str:
    """The file's text, refused unread past :data:`MAX_FILE_BYTES` or if it is not UTF-8."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)
            size = max(os.fstat(file.fileno()).st_size, len(raw))
    except OSError as exc:
        raise error(f"cannot read: {exc.strerror}; check the path", path=str(path)) from exc
    if len(raw) > MAX_FILE_BYTES:
        raise error(f"the file is {size:,} bytes, more than the limit of {MAX_FILE_BYTES:,} "
                    "bytes (256 KiB); scenarios and profiles are a few KiB, check the path",
                    path=str(path))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error("cannot read: not UTF-8 text; check the path", path=str(path)) from exc


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


def _hint(error_type: str, msg: str, ctx: dict[str, Any] | None, schema_command: str) -> str:
    if error_type == "extra_forbidden":
        return f"unknown key; remove it or check its spelling against `{schema_command}`"
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
        raise error(f"the file is empty; see `{error.schema_command}` for what to write",
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
        raise error(_hint(first["type"], first["msg"], ctx, error.schema_command), path=source,
                    line=line_of(loc, lines), key=format_loc(loc) or None) from exc
