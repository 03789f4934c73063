"""The reader's language: one catalogue of strings per language, and the one vocabulary.

Every word trialbench shows a person (terminal, ``rank``, the HTML report, figure labels,
the Markdown summaries) comes from a catalogue here, one YAML file per language
(``en.yaml``, ``zh.yaml``), shipped as package data. A catalogue is a plain mapping of
sections to keys to :meth:`str.format` templates; :func:`text` looks a dotted key up
(``tier.gold``) and fills its ``{fields}``. The two files hold the same keys
(``tests/test_i18n.py`` fails otherwise); append a section for a new feature, keeping
keys sorted inside it.

Data files (tables, CSV, JSON) keep English, stable names; only what a person reads is
translated. :mod:`harness.i18n.vocabulary` lists every fault, state, tier and finding
kind by its one data name, with the catalogue key of its one display name.

The language: ``--lang zh|en`` where a command has it, else ``$TRIALBENCH_LANG``, else
the locale (``LC_ALL``, ``LC_MESSAGES``, ``LANG``, the first one set, starting with
``zh``), else English (:func:`resolve_lang`).
"""

from __future__ import annotations

import os
import string
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

import yaml

__all__ = ["DEFAULT_LANG", "LANGS", "LANG_ENV", "catalogue", "fields_of", "has_key", "html_lang",
           "resolve_lang", "text"]

LANG_ENV = "TRIALBENCH_LANG"
"""Environment variable naming the language (``zh`` or ``en``) when no ``--lang`` is given."""
LANGS: tuple[str, ...] = ("en", "zh")
"""The languages with a catalogue."""
DEFAULT_LANG = "en"
_HTML_LANG = {"en": "en", "zh": "zh-CN"}


def resolve_lang(arg: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The language to use: ``arg`` when given (``zh``, ``en``; ``zh-CN``/``zh_TW`` count
    as ``zh``), else ``$TRIALBENCH_LANG``, else from the locale (the first of ``LC_ALL``,
    ``LC_MESSAGES``, ``LANG`` that is set: ``zh…`` gives ``zh``), else English. An unknown
    language is a :class:`~harness.errors.ConfigError` (a ``ValueError``) naming the
    choices."""
    env = os.environ if environ is None else environ
    where = "--lang" if arg else f"${LANG_ENV}"
    arg = arg or env.get(LANG_ENV) or None
    if arg:
        lang = arg.strip().lower().replace("_", "-").split("-")[0]
        if lang not in LANGS:
            from harness.errors import ConfigError

            raise ConfigError(f"unknown language {arg!r}; write one of: {', '.join(LANGS)}",
                              key=where)
        return lang
    for var in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(var, "")
        if value:
            return "zh" if value.lower().startswith("zh") else DEFAULT_LANG
    return DEFAULT_LANG


def html_lang(lang: str) -> str:
    """The HTML ``lang`` attribute for a language: ``zh-CN`` or ``en``."""
    return _HTML_LANG[lang]


def _flatten(node: Mapping[str, Any], prefix: str, out: dict[str, str], source: str) -> None:
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            _flatten(value, f"{dotted}.", out, source)
        elif isinstance(value, str):
            out[dotted] = value
        else:
            raise ValueError(f"{source}: {dotted}: write a string (quote it), not {value!r}")


@cache
def catalogue(lang: str) -> Mapping[str, str]:
    """The catalogue of ``lang`` as ``{dotted key: template}`` (read once, shipped as
    ``harness/i18n/<lang>.yaml``)."""
    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r}; write one of: {', '.join(LANGS)}")
    source = f"harness/i18n/{lang}.yaml"
    data = yaml.safe_load(resources.files(__package__).joinpath(f"{lang}.yaml")
                          .read_text(encoding="utf-8"))
    out: dict[str, str] = {}
    _flatten(data or {}, "", out, source)
    return out


def has_key(key: str, lang: str = DEFAULT_LANG) -> bool:
    """Whether ``key`` is in the catalogue of ``lang``."""
    return key in catalogue(lang)


def fields_of(template: str) -> set[str]:
    """The ``{field}`` names a template uses (for the catalogue tests)."""
    return {name.split(".")[0].split("[")[0] for _, name, _, _ in
            string.Formatter().parse(template) if name}


def text(key: str, lang: str, /, **fields: Any) -> str:
    """The string ``key`` in ``lang``, its ``{fields}`` filled. A key missing from the
    catalogue is a ``KeyError`` naming it and the file to add it to."""
    try:
        template = catalogue(lang)[key]
    except KeyError:
        raise KeyError(f"{key!r} is not in harness/i18n/{lang}.yaml; add it there and to "
                       "every other catalogue") from None
    return template.format(**fields)
