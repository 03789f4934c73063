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

TIERS = ("gold", "silver", "bronze", "none", "insufficient evidence")
INSUFFICIENT = "insufficient evidence"




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
    cost: Anchor = [(0.90, 1.0), (1.00, 0.0)]
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


class TierRule(_Strict):
    """A tier holds when P(score ≥ min_score) ≥ min_prob."""

    min_score: Annotated[float, Field(ge=0, le=1)]
    min_prob: Annotated[float, Field(gt=0, le=1)] = 0.8


class RankingConfig(_Strict):
    """How suppliers are ranked; the ``ranking:`` key of a scenario."""

    weights: Weights = Weights()
    anchors: Anchors = Anchors()
    validity_floor: Annotated[float, Field(ge=0, le=1)] = 0.95
    gold: TierRule = TierRule(min_score=0.8)
    silver: TierRule = TierRule(min_score=0.6)
    bronze: TierRule = TierRule(min_score=0.4)
    max_interval_width: Annotated[float, Field(gt=0, le=1)] = 0.3
    beats_min_prob: Annotated[float, Field(gt=0.5, le=1)] = 0.95
    draws: Annotated[int, Field(ge=100, le=1_000_000)] = 4000
    seed: Annotated[int, Field(ge=0)] = 0
    block_s: Annotated[float, Field(gt=0)] = 5.0

    @model_validator(mode="after")
    def _ordered_tiers(self) -> Self:
        if not self.gold.min_score >= self.silver.min_score >= self.bronze.min_score:
            raise ValueError("tier thresholds must satisfy gold.min_score >= silver.min_score "
                             ">= bronze.min_score")
        return self
