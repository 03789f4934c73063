"""The report's words: what :mod:`harness.analysis` found (data), said in the reader's
language.

Everything a person reads about a verdict is made here, from the catalogues of
:mod:`harness.i18n` and the one vocabulary of :mod:`harness.i18n.vocabulary`: the order
with its ties and gated suppliers (:func:`order_statement`), "A above B"
(:func:`above_statements`), each finding with its evidence (:func:`finding_text`,
:func:`finding_short`, :func:`gate_texts`), what would settle a tie
(:func:`settle_sentences`), the headline (:func:`headline`), one sentence per supplier
(:func:`verdict_sentences`) and what the evidence cannot tell yet (:func:`evidence_limits`).
The terminal (``rank``, the demo), the HTML report and the notebook print these same
words. Suppliers are shown by their display name (``names``: slug → name as merchants
write it; the slug when absent).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis import RunAnalysis, Statement, evidence_gaps, separations, supplier_facts
from harness.i18n import has_key, text
from harness.i18n.vocabulary import error_counts, term
from harness.metrics import jeffreys
from harness.ranking import Ranking, settle_rows
from harness.ranking_config import INSUFFICIENT, RankingConfig

__all__ = [
    "above_statements",
    "display",
    "evidence_limits",
    "fact_text",
    "finding_short",
    "finding_text",
    "findings_of",
    "gate_texts",
    "headline",
    "order_statement",
    "settle_sentences",
    "verdict_sentences",
]

QUALIFICATION_KINDS = ("missing_authorisation", "authorisation_expired",
                       "authorisation_expiring", "authorisation_lapses_before_peak")


def display(name: str, names: Mapping[str, str] | None) -> str:
    """The display name of a supplier slug (the slug itself when none is recorded)."""
    return (names or {}).get(name, name)


def _list(items: Sequence[str], lang: str) -> str:
    return text("join.list", lang).join(items)


def _criteria(criteria: Sequence[str], lang: str) -> str:
    return _list([text(f"criterion.{c}", lang) for c in criteria], lang)


def findings_of(analysis: RunAnalysis) -> pd.DataFrame:
    """Every finding of an analysis, qualification details included."""
    return analysis.findings if len(analysis.findings.columns) else analysis.ranking.findings


# --------------------------------------------------------------------------- findings


def finding_text(finding: Mapping[str, Any], lang: str = "en") -> str:
    """One finding (a row of :data:`harness.ranking.FINDINGS_COLUMNS`, with
    :data:`harness.analysis.QUALIFICATION_COLUMNS` for a qualification) in words, with its
    share and 95% interval, e.g. "10 of 120 codes unknown to the issuer (fake): 8.3%
    [4.4%, 14.3%]"."""
    kind = str(finding["kind"])
    count, n = int(finding["count"]), int(finding["n"])
    threshold = float(finding["threshold"])
    if kind == "hidden_fee":
        return (text("evidence.hidden_fee", lang, fee=float(finding["share"]), count=count)
                + ("" if finding["gates"] else text("evidence.hidden_fee_unknown", lang)))
    if kind == "low_validity":
        k = n - count
        return text("evidence.low_validity", lang, valid=k, n=n, hi=jeffreys(k, n)[1],
                    threshold=threshold)
    if kind in QUALIFICATION_KINDS:
        days = finding.get("days_left")
        return text(f"evidence.{kind}", lang, brand=finding.get("brand", ""),
                    products=finding.get("products", ""), expiry=finding.get("expires", ""),
                    days=int(days) if isinstance(days, int | float) and days == days else "?",
                    window=int(threshold), peak=finding.get("peak_date", ""))
    key = f"evidence.{kind}"
    words = text(key, lang, count=count, n=n, threshold=threshold) if _known(key, lang) \
        else f"{term('finding', kind, lang)}: {count}/{n}"
    if n and kind != "slow_refunds":
        words += text("evidence.share", lang, share=count / n, lo=float(finding["lo"]),
                      hi=float(finding["hi"]))
    return words


def _known(key: str, lang: str) -> bool:
    return has_key(key, lang)


def finding_short(finding: Mapping[str, Any], lang: str = "en") -> str:
    """A finding in a few words for a table cell, e.g. "fake codes 10/120"."""
    kind = str(finding["kind"])
    name = term("finding", kind, lang)
    if kind == "hidden_fee":
        return text("short.hidden_fee", lang, fee=float(finding["share"]))
    if kind == "low_validity":
        n = int(finding["n"])
        return text("short.low_validity", lang, hi=jeffreys(n - int(finding["count"]), n)[1],
                    threshold=float(finding["threshold"]))
    if kind in QUALIFICATION_KINDS:
        brand = finding.get("brand")
        if isinstance(brand, str) and brand:
            return text("short.qualification", lang, name=name, brand=brand)
        products = finding.get("products")
        if isinstance(products, str) and products:
            return text("short.qualification_products", lang, name=name, products=products)
    return text("short.count", lang, name=name, count=int(finding["count"]),
                n=int(finding["n"]))


def gate_texts(findings: Ranking | pd.DataFrame, supplier: str, *, short: bool = False,
               lang: str = "en", gating: bool = True) -> list[str]:
    """The findings that gate ``supplier`` (or, with ``gating=False``, those that do not),
    in words with their evidence."""
    found = findings.findings if isinstance(findings, Ranking) else findings
    mask = (found["supplier"] == supplier) & (found["gates"].astype(bool) == gating)
    word = finding_short if short else finding_text
    return [word(r, lang) for r in found[mask].to_dict("records")]


# --------------------------------------------------------------------------- order


def order_statement(ranking: Ranking, lang: str = "en",
                    names: Mapping[str, str] | None = None) -> str:
    """The order with its ties, e.g. ``acme > flaky = slowpoke; gated: shady, feeder``.

    ``>`` means every supplier on the left is above every one on the right (P ≥
    beats_min_prob); ``=`` joins suppliers the evidence does not separate as groups, and a
    pair inside a group that is separated is named in brackets. Gated suppliers come after
    ``gated:``: a gate puts them below every supplier no gate holds, whatever their score.
    """
    parts = []
    for group in ranking.groups:
        words = " = ".join(display(n, names) for n in group)
        inside = [text("order.above", lang, a=display(a, names), b=display(b, names))
                  for a in group for b in group if a != b and ranking.above(a, b)]
        parts.append(words + (text("order.but", lang, pairs=_list(inside, lang))
                              if inside else ""))
    words = " > ".join(parts)
    if ranking.gated:
        words += ((text("join.clause", lang) if words else "") + text("order.gated", lang)
                  + _list([display(n, names) for n in ranking.gated], lang))
    return words


def above_statements(ranking: Ranking, min_prob: float, lang: str = "en",
                     names: Mapping[str, str] | None = None) -> list[str]:
    """``A above B, C`` for each supplier no gate holds that beats others no gate holds with
    P ≥ ``min_prob``. (Every such supplier is above every gated one; the order says so.)"""
    above: dict[str, list[str]] = {}
    for a, b, _ in separations(ranking, min_prob):
        above.setdefault(a, []).append(b)
    return [text("order.above", lang, a=display(a, names),
                 b=_list([display(b, names) for b in bs], lang)) for a, bs in above.items()]


def _settle_sentence(row: Mapping[str, Any], config: RankingConfig, lang: str,
                     names: Mapping[str, str] | None) -> str:
    a, b, now = str(row["a"]), str(row["b"]), int(row["orders_now"])
    needed, share = float(row["orders_needed"]), float(row["share"])
    what = (text("settle.separate", lang, a=display(a, names), b=display(b, names),
                 p=config.beats_min_prob) if b
            else text("settle.narrow", lang, a=display(a, names),
                      width=config.max_interval_width))
    if np.isfinite(needed):
        return text("settle.needed", lang, needed=int(needed), now=now, what=what,
                    assurance=config.settle_assurance)
    most = int(np.ceil(now * 32 / 10) * 10)
    end = (text("settle.alike", lang, a=display(a, names), b=display(b, names)) if b
           else text("join.end", lang))
    return text("settle.never", lang, what=what, most=most, share=share, end=end)


def settle_sentences(ranking: Ranking, lang: str = "en",
                     names: Mapping[str, str] | None = None) -> list[str]:
    """For every tie and every "insufficient evidence": how many orders per supplier would
    settle it at the stated probability, if the observed rates hold
    (:func:`harness.ranking.settle_rows`)."""
    return [_settle_sentence(row, ranking.config, lang, names)
            for row in settle_rows(ranking).to_dict("records")]


# --------------------------------------------------------------------------- verdict


def headline(analysis: RunAnalysis, lang: str = "en") -> str:
    """The answer in one or two sentences: who leads, who is gated and why, what would
    settle the rest. ``rank``, the demo and the report print this same text."""
    ranking, config, names = analysis.ranking, analysis.config, analysis.display_names
    tiers = dict(zip(ranking.table["supplier"], ranking.table["tier"], strict=True))

    def named(name: str) -> str:
        return text("join.paren", lang, name=display(name, names),
                    detail=term("tier", str(tiers[name]), lang))

    if not ranking.decided:
        words = text("headline.no_verdict", lang, share=ranking.measured_share,
                     needed=config.min_measured_weight,
                     missing=_criteria(ranking.not_measured, lang))
    elif not ranking.groups:
        words = text("headline.none_pass", lang)
    elif len(ranking.groups[0]) == 1:
        best = ranking.groups[0][0]
        words = text("headline.best", lang, name=display(best, names),
                     tier=term("tier", str(tiers[best]), lang))
    else:
        top = ranking.groups[0]
        inside = [text("order.above", lang, a=display(a, names), b=display(b, names))
                  for a, b, _ in separations(ranking, config.beats_min_prob)
                  if a in top and b in top]
        rest = (text("headline.leading_settled", lang, pairs=_list(inside, lang)) if inside
                else text("headline.leading_unsettled", lang))
        words = text("headline.leading", lang, named=_list([named(n) for n in top], lang),
                     rest=rest)
    findings = findings_of(analysis)
    for name in ranking.gated:
        words += text("headline.gated", lang, name=display(name, names),
                      reasons=text("join.clause", lang).join(
                          gate_texts(findings, name, lang=lang)))
    ties = [r for r in settle_rows(ranking).to_dict("records")
            if r["b"] and np.isfinite(float(r["orders_needed"]))]
    if ties:
        words += text("headline.ties", lang, most=max(int(r["orders_needed"]) for r in ties),
                      assurance=config.settle_assurance)
    return words


def _deadline(deadline_s: object, lang: str) -> str:
    if isinstance(deadline_s, int | float) and deadline_s == deadline_s:
        return text("fact.deadline_s", lang, s=float(deadline_s))
    return text("fact.deadline", lang)


def fact_text(fact: Statement, lang: str = "en") -> str:
    """One fact of a supplier's verdict (:func:`harness.analysis.supplier_facts`) in words."""
    f = dict(fact.fields)
    code = fact.code
    if code in ("sla", "burst_p95_slow"):
        f["deadline"] = _deadline(f.pop("deadline_s"), lang)
    elif code in ("refunds_ok", "refunds_slow"):
        median = float(f.pop("median"))
        f["speed"] = text("fact.refund_speed", lang, median=median) \
            if np.isfinite(median) else ""
    elif code == "skipped" and f["count"] == 1:
        code = "skipped_one"
    elif code == "supplier_errors":
        f["classes"] = error_counts(f["classes"], lang)
    elif code == "harness_apart":
        own = []
        if f["requests"]:
            own.append(text("fact.harness_requests_one" if f["requests"] == 1
                            else "fact.harness_requests", lang, count=f["requests"]))
        if f["not_found"]:
            own.append(text("fact.not_found", lang, count=f["not_found"]))
        return text("fact.harness_apart", lang, what=text("join.and", lang).join(own))
    elif code == "no_data":
        f["criteria"] = _criteria(f["criteria"], lang)
    elif code == "platform_grade":
        f["grade"] = text(f"grade.{f['grade']}", lang)
    return text(f"fact.{code}", lang, **f)


def verdict_sentences(analysis: RunAnalysis, lang: str = "en") -> dict[str, str]:
    """One plain-language sentence per supplier (by slug), in ranking order: its tier or
    gates, then what speaks for it and against it, qualification findings included."""
    ranking, names = analysis.ranking, analysis.display_names
    facts = supplier_facts(analysis)
    findings = findings_of(analysis)
    out: dict[str, str] = {}
    for row in ranking.table.itertuples():
        name = str(row.supplier)
        shown = display(name, names)
        good = [fact_text(f, lang) for f in facts[name] if f.good]
        bad = [fact_text(f, lang) for f in facts[name]
               if f.good is False and not (row.gated and f.code == "codes_some_valid")]
        bad += gate_texts(findings[findings["kind"].isin(QUALIFICATION_KINDS)], name,
                          lang=lang, gating=False)
        tier = str(row.tier)
        if row.gated:
            head = text("sentence.gated", lang, name=shown, reasons=text(
                "join.clause", lang).join(gate_texts(findings, name, lang=lang)))
        elif tier == INSUFFICIENT:
            head = text("sentence.insufficient", lang, name=shown, lo=row.score_lo,
                        hi=row.score_hi)
        elif tier == "none":
            head = text("sentence.no_tier", lang, name=shown)
        else:
            head = text("sentence.tier", lang, name=shown, tier=term("tier", tier, lang))
        parts = []
        if good:
            parts.append(text("join.list", lang).join(good))
        if bad:
            parts.append((text("join.but", lang) if good else "")
                         + text("join.list", lang).join(bad))
        joiner = text("join.gated_also" if row.gated else "join.head", lang)
        out[name] = (head + (joiner + text("join.clause", lang).join(parts) if parts else "")
                     + text("join.end", lang))
    return out


def evidence_limits(analysis: RunAnalysis, lang: str = "en") -> list[str]:
    """What these runs cannot tell yet, one sentence each, with what would settle it."""
    names, config = analysis.display_names, analysis.config
    out: list[str] = []
    for gap in evidence_gaps(analysis):
        f = dict(gap.fields)
        for key in ("name", "a", "b"):
            if key in f:
                f[key] = display(str(f[key]), names)
        if gap.code == "settle":
            out.append(_settle_sentence(gap.fields, config, lang, names))
            continue
        if gap.code == "not_measured":
            out.append(text("limits.not_measured", lang, criteria=_criteria(f["criteria"], lang),
                            end=text("limits.no_burst" if f["no_burst"] else "join.end",
                                     lang)))
            continue
        if gap.code == "tie":
            n_a, n_b = f.pop("n_a"), f.pop("n_b")
            f["count"] = (text("limits.orders", lang, n=n_a) if n_a == n_b
                          else text("limits.orders_two", lang, a=n_a, b=n_b))
        elif gap.code == "wide":
            widest = f.pop("widest")
            f["why"] = text("limits.widest", lang, **{
                **widest, "criterion": text(f"criterion.{widest['criterion']}", lang)}) \
                if widest else ""
        elif gap.code == "unknown":
            f["criteria"] = _criteria(f["criteria"], lang)
        out.append(text(f"limits.{gap.code}", lang, **f))
    return out
