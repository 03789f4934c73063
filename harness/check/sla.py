"""SLA thresholds: a small k6-like expression language, in a scenario or a file of its own.

A threshold is ``metric op number`` with ``op`` one of ``< <= > >= == !=``, for example
``delivery_p95_s < 1800`` or ``validity_rate >= 0.99``; the metric names are those of
:data:`harness.check.metrics.METRICS`. An SLA names thresholds for every supplier
(``all:``) and per supplier (``suppliers: {name: [...]}``); each entry is the expression,
or a mapping ``{expr: ..., min_samples: N}`` when the metric's default minimum sample
does not suit. ``margins:`` overrides the regression margin of a metric and ``alpha:`` the
one-sided significance level (default 0.01, Holm-corrected over the regression checks)::

    sla:
      all:
        - within_sla_rate > 0.95
        - {expr: delivery_p95_s < 1800, min_samples: 200}
        - oversold_orders == 0
      suppliers:
        acme: [validity_rate >= 0.99]
      margins: {delivery_p95_s: 0.2}

The same mapping (without the ``sla:`` key) is an SLA file of its own, so one SLA can serve
several scenarios (``trialbench check RUN --sla FILE``).

Errors are found when the file is loaded, never when a check would silently pass: an
unknown metric (with a "did you mean"), a malformed expression, an operator that cannot be
judged on a sample (``==`` on a rate other than 0 or 1, ``==`` on a percentile).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from harness.check.metrics import METRICS, MetricSpec
from harness.errors import ConfigError
from harness.yamlfile import Bounded, LocatedValueError, read_yaml, validate_located

Op = Literal["<", "<=", ">", ">=", "==", "!="]
OPS: tuple[Op, ...] = ("<=", ">=", "==", "!=", "<", ">")

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_EXPR = re.compile(rf"^\s*(?P<metric>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op><=|>=|==|!=|<|>)\s*"
                   rf"(?P<value>{_NUMBER})\s*$")
_HEAD = re.compile(r"^\s*(?P<metric>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<rest>.*)$")


class SlaError(ConfigError):
    """An SLA (a scenario's ``sla:`` or an SLA file) is invalid."""

    schema_command = "trialbench schema --kind sla"


def did_you_mean(name: str, known: list[str] | tuple[str, ...]) -> str:
    """``; did you mean 'x'?`` for the closest known names, or a list of them all."""
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    if close:
        return "; did you mean " + " or ".join(repr(c) for c in close) + "?"
    return "; known metrics: " + ", ".join(sorted(known))


@dataclass(frozen=True)
class Expression:
    """A parsed ``metric op number``."""

    metric: str
    op: Op
    value: float

    @property
    def spec(self) -> MetricSpec:
        """The metric's definition."""
        return METRICS[self.metric]

    def holds(self, x: float) -> bool:
        """Whether ``x op value``."""
        return {"<": x < self.value, "<=": x <= self.value, ">": x > self.value,
                ">=": x >= self.value, "==": x == self.value,
                "!=": x != self.value}[self.op]

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"


def parse_expression(text: str) -> Expression:
    """Parse ``metric op number``; ``ValueError`` saying what is wrong and what to write."""
    match = _EXPR.match(text)
    head = _HEAD.match(text)
    if head is not None and head["metric"] not in METRICS:
        raise ValueError(f"unknown metric {head['metric']!r}"
                         + did_you_mean(head["metric"], list(METRICS)))
    if match is None:
        raise ValueError(f"cannot read {text!r}: write 'metric op number' with op one of "
                         "< <= > >= == != (e.g. 'delivery_p95_s < 1800')")
    expr = Expression(match["metric"], match["op"], float(match["value"]))  # type: ignore[arg-type]
    spec = expr.spec
    if spec.kind == "rate":
        if not 0 <= expr.value <= 1:
            raise ValueError(f"{expr.metric} is a share between 0 and 1; write a number in "
                             f"that range, not {match['value']}")
        if expr.op in ("==", "!=") and expr.value not in (0.0, 1.0):
            raise ValueError(f"{expr.metric} {expr.op} {match['value']} cannot be judged "
                             "from a sample; use <, <=, > or >= (== and != only with 0 or 1)")
    if spec.kind == "quantile" and expr.op in ("==", "!="):
        raise ValueError(f"a percentile cannot be judged with {expr.op}; use < or <=")
    return expr


_ENTRY_SCHEMA: dict[str, Any] = {"anyOf": [
    {"type": "string", "description": "metric op number, e.g. 'delivery_p95_s < 1800'"},
    {"type": "object", "additionalProperties": False, "required": ["expr"],
     "properties": {"expr": {"type": "string"},
                    "min_samples": {"type": "integer", "minimum": 1}}}]}


class Threshold(BaseModel):
    """One threshold: the expression, and the smallest sample it may be judged on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    expr: str
    """``metric op number``."""
    min_samples: Annotated[int, Bounded(1, 10_000_000, "count")] | None = None
    """Fewest samples (orders, codes, refunds) to judge it on; default: the metric's."""

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        return {"expr": data} if isinstance(data, str) else data

    @field_validator("expr")
    @classmethod
    def _parses(cls, value: str) -> str:
        parse_expression(value)
        return value

    @property
    def expression(self) -> Expression:
        """The parsed expression."""
        return parse_expression(self.expr)

    @property
    def needs(self) -> int:
        """The minimum sample: the one written, or the metric's default."""
        return self.min_samples if self.min_samples is not None \
            else self.expression.spec.min_samples


Entry = Annotated[Threshold, WithJsonSchema(_ENTRY_SCHEMA)]


class SlaConfig(BaseModel):
    """Thresholds for CI: for every supplier and per supplier, and regression settings."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    all: tuple[Entry, ...] = ()
    """Thresholds every supplier must meet."""
    suppliers: dict[str, tuple[Entry, ...]] = Field(default_factory=dict)
    """Thresholds for one supplier, by name (in addition to ``all``)."""
    margins: dict[str, Annotated[float, Bounded(0, 1_000_000, "margin")]] = \
        Field(default_factory=dict)
    """Regression margin per metric (relative for percentiles, absolute otherwise)."""
    alpha: Annotated[float, Bounded(0, 0.5, "significance level", low_open=True)] = 0.01
    """One-sided significance level of the regression tests, before Holm's correction."""

    @field_validator("margins")
    @classmethod
    def _known_margins(cls, value: dict[str, float]) -> dict[str, float]:
        for name in value:
            if name not in METRICS:
                raise LocatedValueError(f"unknown metric {name!r}"
                                        + did_you_mean(name, list(METRICS)), (name,))
        return value

    def thresholds_for(self, supplier: str) -> list[Threshold]:
        """The thresholds that apply to ``supplier``: ``all`` then its own."""
        return [*self.all, *self.suppliers.get(supplier, ())]

    def margin(self, metric: str) -> float:
        """The regression margin of ``metric``: the one written, or the default."""
        return self.margins.get(metric, METRICS[metric].margin)

    def check_suppliers(self, names: set[str], at: tuple[str, ...] = ()) -> None:
        """Raise :class:`LocatedValueError` for a supplier not among ``names``."""
        for name in self.suppliers:
            if name not in names:
                raise LocatedValueError(
                    f"supplier {name!r} is not in suppliers:"
                    + (did_you_mean(name, sorted(names)).replace("known metrics",
                                                                 "write one of")),
                    (*at, "suppliers", name))


def load_sla(path: Path) -> SlaConfig:
    """Read an SLA file (the mapping of a scenario's ``sla:``, or a file with ``sla:`` at
    its top); errors name the file, the line and the key."""
    data, lines = read_yaml(path, error=SlaError)
    if isinstance(data, dict) and set(data) == {"sla"}:
        data = data["sla"]
        lines = {loc[1:]: line for loc, line in lines.items() if loc[:1] == ("sla",)}
    return validate_located(data, lines, str(path), SlaConfig, error=SlaError)
