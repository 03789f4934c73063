"""The ``ranking:`` settings of a scenario: weights, value-function anchors, gates, tiers.

Plain pydantic, no numpy or pandas, so loading a scenario stays light; the ranking itself
is :mod:`harness.ranking`.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Criterion = Literal["sla_share", "validity", "refunds", "cost", "load_errors", "load_latency"]
CRITERIA: tuple[Criterion, ...] = ("sla_share", "validity", "refunds", "cost", "load_errors",
                                   "load_latency")

TIERS = ("gold", "silver", "bronze", "none", "insufficient evidence", "gated")
INSUFFICIENT = "insufficient evidence"
GATED = "gated"
"""The tier of a supplier a gate holds: it takes money without delivering value."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Weights(_Strict):
    """Weight of each criterion; renormalised over the criteria that have data."""

    sla_share: Annotated[float, Field(ge=0)] = 0.25
    validity: Annotated[float, Field(ge=0)] = 0.30
    refunds: Annotated[float, Field(ge=0)] = 0.15
    cost: Annotated[float, Field(ge=0)] = 0.15
    load_errors: Annotated[float, Field(ge=0)] = 0.10
    load_latency: Annotated[float, Field(ge=0)] = 0.05


Anchor = list[tuple[float, float]]


class Anchors(_Strict):
    """Value function of each criterion: (metric, value) points, linear between, clipped."""

    sla_share: Anchor = [(0.80, 0.0), (1.00, 1.0)]
    validity: Anchor = [(0.90, 0.0), (1.00, 1.0)]
    refunds: Anchor = [(0.50, 0.0), (1.00, 1.0)]
    cost: Anchor = [(0.97, 1.0), (0.99, 0.6), (1.00, 0.0)]
    load_errors: Anchor = [(0.00, 1.0), (0.05, 0.0)]
    load_latency: Anchor = [(1.00, 1.0), (3.00, 0.0)]

    @field_validator("*")
    @classmethod
    def _check(cls, points: Anchor) -> Anchor:
        xs = [x for x, _ in points]
        if len(points) < 2 or len(set(xs)) != len(xs):
            raise ValueError("give at least two (metric, value) points with distinct metrics, "
                             "e.g. [[0.9, 0], [1.0, 1]]")
        if any(not 0.0 <= v <= 1.0 for _, v in points):
            raise ValueError("values must lie in [0, 1]")
        return sorted(points)


class Gates(_Strict):
    """When a supplier is gated: it took money without delivering value (see the README).

    Counts are facts, not samples: one code the issuer never minted is one customer sold
    nothing, so the defaults gate at the first one. 0 turns a count gate off.
    """

    fake_codes: Annotated[int, Field(ge=0)] = 1
    """Codes the issuer does not know (verdict not_minted), from this many."""
    resold_codes: Annotated[int, Field(ge=0)] = 1
    """Codes the issuer reports already redeemed before the merchant sold them."""
    duplicate_codes: Annotated[int, Field(ge=0)] = 1
    """Codes delivered twice (in this run or an earlier one)."""
    wrong_face_value_codes: Annotated[int, Field(ge=0)] = 1
    """Codes worth another face value than ordered."""
    phantom_refunds: Annotated[int, Field(ge=0)] = 1
    """Refunds the supplier marked completed whose money never reached the balance."""
    oversold_orders: Annotated[int, Field(ge=0)] = 1
    """Orders accepted and then failed for stock, partly filled, or "success" without a
    code (card products)."""
    hidden_fee_per_order: Annotated[float, Field(ge=0)] = 0.01
    """Balance drop beyond the orders' amounts, per order charged, currency units; a fee
    at or above this gates (0 turns it off)."""
    validity_floor: Annotated[float, Field(ge=0, le=1)] = 0.95
    """Validity whose Jeffreys 95% upper bound is under this gates (bad codes of any kind,
    expired and bad-pattern ones included)."""


class TierRule(_Strict):
    """A tier holds when P(score ≥ min_score) ≥ min_prob."""

    min_score: Annotated[float, Field(ge=0, le=1)]
    min_prob: Annotated[float, Field(gt=0, le=1)] = 0.8


class RankingConfig(_Strict):
    """How suppliers are ranked; the ``ranking:`` key of a scenario."""

    weights: Weights = Weights()
    anchors: Anchors = Anchors()
    gates: Gates = Gates()
    refund_deadline_s: Annotated[float, Field(gt=0)] = 3600.0
    """A refund counts for the refunds criterion only if completed, credited, and within
    this many seconds of its request."""
    min_measured_weight: Annotated[float, Field(ge=0, le=1)] = 0.5
    """Share of the policy's weight, cost excluded, that measured criteria must carry for
    any tier or any "A above B"; below it price would decide, so nothing is decided."""
    gold: TierRule = TierRule(min_score=0.8)
    silver: TierRule = TierRule(min_score=0.6)
    bronze: TierRule = TierRule(min_score=0.4)
    max_interval_width: Annotated[float, Field(gt=0, le=1)] = 0.3
    beats_min_prob: Annotated[float, Field(gt=0.5, le=1)] = 0.95
    draws: Annotated[int, Field(ge=100, le=1_000_000)] = 4000
    seed: Annotated[int, Field(ge=0)] = 0
    block_s: Annotated[float, Field(gt=0)] = 5.0
    settle_assurance: Annotated[float, Field(gt=0.5, lt=1)] = 0.8
    """"What would settle it": the orders per supplier with which a rerun separates a tie
    (or narrows an interval to a tier) in this share of simulated reruns."""

    @model_validator(mode="before")
    @classmethod
    def _old_validity_floor(cls, data: object) -> object:
        """Runs written before ``gates:`` have ``validity_floor`` at the top: move it."""
        if isinstance(data, dict) and "validity_floor" in data:
            data = dict(data)
            gates = dict(data.get("gates") or {})
            gates.setdefault("validity_floor", data.pop("validity_floor"))
            data["gates"] = gates
        return data

    @property
    def validity_floor(self) -> float:
        """The validity gate's floor (``gates.validity_floor``)."""
        return self.gates.validity_floor

    @model_validator(mode="after")
    def _ordered_tiers(self) -> Self:
        if not self.gold.min_score >= self.silver.min_score >= self.bronze.min_score:
            raise ValueError("tier thresholds must satisfy gold.min_score >= silver.min_score "
                             ">= bronze.min_score")
        return self
