"""The catalogues (one per language) and the one vocabulary of faults, states and tiers."""

from __future__ import annotations

import pytest

from harness import codes, events, protocol
from harness.i18n import LANGS, catalogue, fields_of, html_lang, resolve_lang, text
from harness.i18n.vocabulary import GROUPS, ORDER_STATES, REFUND_STATES, TIERS, VERDICTS, term
from harness.ranking import _COUNT_GATES, FINDINGS_COLUMNS
from harness.ranking_config import TIERS as RANKING_TIERS
from harness.results import ORDERS_COLUMNS


def test_every_key_is_in_every_language() -> None:
    """A key in one catalogue and not in another fails, naming the key and the language."""
    keys = {lang: set(catalogue(lang)) for lang in LANGS}
    every = set().union(*keys.values())
    missing = sorted(f"{lang}: {key}" for lang in LANGS for key in every - keys[lang])
    assert not missing, "keys missing from a catalogue: " + ", ".join(missing)


def test_translations_fill_the_same_fields() -> None:
    """Each key's template takes the same {fields} in every language, so a caller fills
    any language the same way."""
    english = catalogue("en")
    for lang in LANGS:
        for key, template in catalogue(lang).items():
            assert fields_of(template) == fields_of(english[key]), (lang, key)


def test_language_comes_from_argument_then_locale() -> None:
    """--lang wins; else LC_ALL, LC_MESSAGES, LANG (first set) starting with zh; else en."""
    assert resolve_lang("zh", {"LANG": "en_US.UTF-8"}) == "zh"
    assert resolve_lang("en", {"LANG": "zh_CN.UTF-8"}) == "en"
    assert resolve_lang(None, {"LANG": "zh_CN.UTF-8"}) == "zh"
    assert resolve_lang(None, {"LC_ALL": "C.UTF-8", "LANG": "zh_CN.UTF-8"}) == "en"
    assert resolve_lang(None, {"LC_MESSAGES": "zh_TW", "LANG": "en_GB"}) == "zh"
    assert resolve_lang(None, {}) == "en"
    assert html_lang("zh") == "zh-CN" and html_lang("en") == "en"
    with pytest.raises(ValueError, match=r"en, zh"):
        resolve_lang("fr")


def test_missing_key_names_the_catalogue() -> None:
    """Asking for a key no catalogue has is an error naming the key and the file."""
    with pytest.raises(KeyError, match=r"no\.such\.key.*zh\.yaml"):
        text("no.such.key", "zh")


def test_every_name_the_pipeline_emits_is_in_the_vocabulary() -> None:
    """Code verdicts, order and refund states, tiers and finding kinds all come from the
    vocabulary, and each has its display name in every catalogue."""
    assert set(codes.VERDICTS) == set(VERDICTS)
    final = ORDERS_COLUMNS["state"].split(": ", 1)[1].split(", ")
    assert set(protocol.ORDER_STATES) | set(final) <= set(ORDER_STATES)
    assert set(protocol.REFUND_STATES) == set(REFUND_STATES)
    assert set(RANKING_TIERS) == set(TIERS)
    assert set(events.ERROR_CLASSES) == set(GROUPS["error"])
    kinds = {kind for kind, *_ in _COUNT_GATES} | {"hidden_fee", "low_validity",
                                                   "slow_refunds"}
    assert all(kind in FINDINGS_COLUMNS["kind"] for kind in kinds)
    assert kinds <= set(GROUPS["finding"])
    for lang in LANGS:
        for group, names in GROUPS.items():
            for name in names:
                assert term(group, name, lang).strip(), (lang, group, name)


def test_a_fault_has_one_name() -> None:
    """The gate on fake codes is worded from the verdict's own name, in every language:
    "fake" in the terminal's bad-codes column and "fake codes" in the report's gates."""
    for lang in LANGS:
        assert term("verdict", "not_minted", lang) in term("finding", "fake_codes", lang)
        assert term("verdict", "resold", lang) in term("finding", "resold_codes", lang)
    assert term("verdict", "not_minted", "en") == "fake"
    assert term("verdict", "not_minted", "zh") == "伪造"


def test_trial_live_view_in_chinese_shows_display_names() -> None:
    """The trial's live table is worded in the chosen language (title, columns from the
    vocabulary and the catalogue, elapsed time and ETA) and names suppliers by display name."""
    from rich.console import Console

    from harness.progress import TrialProgress

    console = Console(width=200, record=True)
    progress = TrialProgress(["xingchen"], 10, enabled=False, console=console, lang="zh",
                             names={"xingchen": "星辰卡盟"})
    progress.started -= 10.0
    for _ in range(5):
        progress.count("xingchen", "success")
    console.print(progress.table())
    shown = console.export_text()
    for words in ("试单进度", "星辰卡盟", "计划", term("state", "success", "zh"),
                  "已用 10 秒 · 已结束订单 5/10 · 订单约剩 10 秒"):
        assert words in shown, words
    assert "xingchen" not in shown and "elapsed" not in shown
