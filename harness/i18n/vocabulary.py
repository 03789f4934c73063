"""One vocabulary: every fault, state, tier and finding kind, by one name, in one place.

Each term has one data name (English, stable: what tables, CSV and JSON hold) and one
display name per language, the catalogue entry ``<group>.<data name>``. Terminal, report,
Markdown summaries and docs show :func:`term`, never a name of their own, so the same
fault reads the same everywhere: a code the issuer never minted is ``not_minted`` in the
data and "fake" (假卡密) wherever a person reads it; the gate on it, ``fake_codes``, is
worded from the same term.

``tests/test_i18n.py`` checks that every name the pipeline can emit (code verdicts, order
and refund states, tiers, finding kinds) is listed here and has its words in every
catalogue.
"""

from __future__ import annotations

from collections.abc import Mapping

from harness.i18n import text

__all__ = ["ERROR_CLASSES", "FINDING_KINDS", "FINDING_OF_VERDICT", "GROUPS", "ORDER_STATES",
           "REFUND_STATES", "TIERS", "VERDICTS", "error_counts", "term"]

VERDICTS: tuple[str, ...] = ("valid", "bad_pattern", "duplicate", "wrong_face_value",
                             "expiring", "not_minted", "resold", "expired", "disabled",
                             "unchecked")
"""Code verdicts (:data:`harness.codes.VERDICTS`)."""

ORDER_STATES: tuple[str, ...] = ("submitted", "processing", "success", "partial", "failed",
                                 "refunded", "unknown", "skipped")
"""Canonical order states (the protocol's, plus ``unknown`` and ``skipped``: never sent,
the spending cap blocked it)."""

REFUND_STATES: tuple[str, ...] = ("pending", "approved", "rejected", "completed")
"""Refund states (:data:`harness.protocol.REFUND_STATES`)."""

TIERS: tuple[str, ...] = ("gold", "silver", "bronze", "none", "insufficient evidence",
                          "gated")
"""Tiers (:data:`harness.ranking_config.TIERS`)."""

FINDING_KINDS: tuple[str, ...] = (
    "fake_codes", "resold_codes", "duplicate_codes", "wrong_face_value_codes",
    "phantom_refunds", "oversold_orders", "hidden_fee", "low_validity", "slow_refunds",
    "missing_authorisation", "authorisation_expired", "authorisation_expiring",
    "authorisation_lapses_before_peak")
"""Kinds of findings (``findings.csv``): the gates, slow refunds, and the qualifications."""

ERROR_CLASSES: tuple[str, ...] = ("429", "503", "5xx", "timeout", "connect", "out_of_stock",
                                  "balance", "refused", "not_found", "bad_response")
"""Classes of failed requests (:data:`harness.events.ERROR_CLASSES`; the catch-all
``other(<kind>)`` is shown as it is)."""

FINDING_OF_VERDICT: dict[str, str] = {
    "not_minted": "fake_codes", "resold": "resold_codes", "duplicate": "duplicate_codes",
    "wrong_face_value": "wrong_face_value_codes"}
"""The gate finding on each code fault: both are worded from the verdict's one name."""

GROUPS: dict[str, tuple[str, ...]] = {
    "verdict": VERDICTS, "state": ORDER_STATES, "refund_state": REFUND_STATES,
    "tier": TIERS, "finding": FINDING_KINDS, "error": ERROR_CLASSES}
"""Catalogue section of each group of terms, and its names."""


def _key(name: str) -> str:
    return name.replace(" ", "_")


def term(group: str, name: str, lang: str) -> str:
    """The display name of ``name`` (a data name of ``group``: ``verdict``, ``state``,
    ``refund_state``, ``tier``, ``finding`` or ``error``) in ``lang``. A name outside the vocabulary
    is shown as it is (data from an older or newer version is still readable)."""
    if name not in GROUPS[group]:
        return name
    if group == "finding" and name in FINDING_OF_VERDICT.values():
        verdict = next(v for v, k in FINDING_OF_VERDICT.items() if k == name)
        return text("finding.codes_of", lang, verdict=term("verdict", verdict, lang))
    return text(f"{group}.{_key(name)}", lang)


def error_counts(counts: Mapping[str, int], lang: str) -> str:
    """Failed requests by class, e.g. ``503:12 timeout:3`` (in the order of
    :data:`ERROR_CLASSES`, then others by name), each class by its display name; ``-``
    when there are none."""
    order = {name: i for i, name in enumerate(ERROR_CLASSES)}
    items = sorted(((k, v) for k, v in counts.items() if v),
                   key=lambda kv: (order.get(kv[0], len(order)), kv[0]))
    return text("join.counts", lang).join(
        text("cell.count", lang, name=term("error", k, lang), count=v) for k, v in items) or "-"
