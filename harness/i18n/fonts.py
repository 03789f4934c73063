"""A font with Chinese glyphs for the report's figures, found and registered at run time.

matplotlib's default DejaVu Sans has no CJK glyphs: Chinese labels come out as boxes. So
for ``zh`` figures :func:`cjk_font` looks, in order, for

1. the Noto Sans CJK SC face that the PyPI package ``mplfonts`` ships (installed with
   ``pip install 'trialbench[zh]'``, which ``make`` does), registered with matplotlib's
   ``font_manager`` from its file (the package itself is never imported);
2. a CJK family already installed on the system (Debian's ``fonts-noto-cjk``,
   ``fonts-wqy-microhei``, Windows' Microsoft YaHei, macOS' PingFang SC, ...);

and keeps one whose file really holds the glyphs the report uses. Without one,
:func:`figure_lang` says so once on stderr and the figures fall back to English labels,
never boxes.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

__all__ = ["CJK_FAMILIES", "PROBE", "cjk_font", "cjk_font_path", "embedded_font_css",
           "figure_fonts", "figure_lang", "has_glyphs"]

CJK_FAMILIES: tuple[str, ...] = (
    "Noto Sans CJK SC", "Source Han Sans SC", "Noto Sans SC", "WenQuanYi Micro Hei",
    "WenQuanYi Zen Hei", "Microsoft YaHei", "PingFang SC", "SimHei", "Noto Sans CJK JP",
    "Droid Sans Fallback", "AR PL UMing CN")
"""CJK families looked for on the system, Simplified Chinese first."""

PROBE = "星辰卡盟供应商交付时间比例分数区间等级金银铜"
"""Characters a font must have to draw the Chinese figures."""

_PACKAGED = ("mplfonts", "fonts/NotoSansCJKsc-Regular.otf")
_warned: list[bool] = []


def has_glyphs(path: str | Path, chars: str = PROBE) -> bool:
    """Whether the font file at ``path`` (first face of a collection) maps every char."""
    from matplotlib.ft2font import FT2Font

    try:
        font = FT2Font(str(path))
    except (OSError, RuntimeError, ValueError):
        return False
    return all(font.get_char_index(ord(c)) for c in chars)


def _packaged_font() -> Path | None:
    spec = importlib.util.find_spec(_PACKAGED[0])  # locates, does not import, the package
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / _PACKAGED[1]
        if path.is_file():
            return path
    return None


@cache
def _found() -> tuple[str, str] | None:
    from matplotlib import font_manager

    packaged = _packaged_font()
    if packaged is not None and has_glyphs(packaged):
        font_manager.fontManager.addfont(str(packaged))
        return (str(font_manager.FontProperties(fname=str(packaged)).get_name()),
                str(packaged))
    for family in CJK_FAMILIES:
        try:
            path = font_manager.findfont(font_manager.FontProperties(family=family),
                                         fallback_to_default=False)
        except ValueError:
            continue
        if has_glyphs(path):
            return family, path
    return None


def cjk_font() -> str | None:
    """The family name of a font with Chinese glyphs that matplotlib can use, or None."""
    found = _found()
    return None if found is None else found[0]


def cjk_font_path() -> str | None:
    """The file of :func:`cjk_font`, or None."""
    found = _found()
    return None if found is None else found[1]


EMBEDDED_FAMILY = "trialbench-cjk"
"""CSS family of the CJK glyphs :func:`embedded_font_css` embeds in a report."""


def embedded_font_css(page: str) -> str:
    """An ``@font-face`` rule that embeds, as a base64 WOFF, only the glyphs of the CJK
    font that ``page`` uses (fontTools subsetting; tens of kB), so a Chinese report reads
    right on a machine without Chinese fonts; empty without a CJK font or CJK text."""
    import base64
    import io

    chars = "".join(sorted({c for c in page if ord(c) >= 0x2E80}))
    path = cjk_font_path()
    if not chars or path is None:
        return ""
    from fontTools import subset  # type: ignore[import-untyped]  # fontTools ships no types
    from fontTools.ttLib import TTFont  # type: ignore[import-untyped]

    options = subset.Options()
    options.flavor = "woff"  # zlib: no extra compressor needed
    options.layout_features = ["*"]
    try:
        font = TTFont(path, fontNumber=0)
        subsetter = subset.Subsetter(options)
        subsetter.populate(text=chars)
        subsetter.subset(font)
        buffer = io.BytesIO()
        font.flavor = "woff"
        font.save(buffer)
    except Exception:  # a font fontTools cannot subset: the reader's own fonts will do
        return ""
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (f'@font-face{{font-family:"{EMBEDDED_FAMILY}";'
            f'src:url(data:font/woff;base64,{data}) format("woff")}}')


def figure_lang(lang: str) -> str:
    """The language the figures can be labelled in: ``lang``, or ``en`` when it is ``zh``
    and no font has Chinese glyphs (said once on stderr, with how to install one)."""
    if lang != "zh" or cjk_font() is not None:
        return lang
    if not _warned:
        from harness.i18n import text

        print(f"trialbench: warning: {text('terminal.fallback_font', lang)}", file=sys.stderr)
        _warned.append(True)
    return "en"


@contextmanager
def figure_fonts(lang: str) -> Iterator[None]:
    """matplotlib settings for figures in ``lang`` (figures and their texts made inside
    keep them): the CJK font first for ``zh``; for other languages DejaVu Sans first and
    the CJK font as the fallback for display names in any script (``星辰卡盟``); without a
    CJK font, matplotlib's defaults."""
    import matplotlib

    family = cjk_font()
    if family is None:
        yield
        return
    families = [family, "DejaVu Sans"] if lang == "zh" else ["DejaVu Sans", family]
    # concrete families, not "sans-serif": texts keep them after the context is left
    with matplotlib.rc_context({"font.family": families, "axes.unicode_minus": False}):
        yield
