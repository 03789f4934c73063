"""The demo's report, ``trialbench rank`` / ``report``, and the notebook, on one fresh demo run.

The demo runs once for the module through the CLI in a subprocess (about a minute; keeps
the trial's event loop and any gevent out of pytest). ``rank`` and ``report`` are driven
in-process: they never import Locust.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from test_check_history import write_validity_drop_index

from harness.analysis import RunAnalysis, analyse_runs, latest_run
from harness.cli import main
from harness.events import COMPLETE_STAMP, shards_signature
from harness.ranking import RANKING_COLUMNS
from harness.report import figure_burst_timeline, figures, render_html
from harness.wording import headline

pytestmark = pytest.mark.serial  # the demo's verdict rests on delivery times vs its SLA: run alone

ROOT = Path(__file__).parent.parent
NOTEBOOK = ROOT / "notebooks" / "compare_suppliers.ipynb"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A fresh ``trialbench demo`` run: (run folder, what it printed)."""
    root = tmp_path_factory.mktemp("demo")
    result = subprocess.run(
        [sys.executable, "-m", "harness", "demo", "--results", str(root), "--no-progress"],
        cwd=ROOT, capture_output=True, text=True, timeout=170)
    assert result.returncode == 0, result.stderr[-3000:]
    return latest_run(root), result.stdout


@pytest.fixture(scope="module")
def analysis(demo: tuple[Path, str]) -> RunAnalysis:
    """The demo run, analysed."""
    return analyse_runs([demo[0]])


def test_demo_ends_with_ranking_and_report(demo: tuple[Path, str]) -> None:
    """The demo prints the trial summary, then the ranking, and writes report.html."""
    run, out = demo
    assert out.index("trial summary") < out.index("supplier ranking") < out.index("order:")
    assert f"report:     {run / 'report.html'}" in out.replace("\n", "")
    assert (run / "report.html").is_file() and (run / "ranking.csv").is_file()


def test_finished_run_keeps_its_completion_for_rank(demo: tuple[Path, str]) -> None:
    """A run closed after its finish event keeps "complete" beside its log, valid for the
    log as written, so rank and report need not read the whole log to know it."""
    run, _ = demo
    kept = json.loads((run / COMPLETE_STAMP).read_text())
    assert kept == {"complete": True, "shards": shards_signature(run)}


def test_demo_reaches_a_verdict(analysis: RunAnalysis) -> None:
    """The demo's done-when: acme is gold and first; shady is gated for bad codes and feeder
    for phantom refunds and its hidden fee, below every clean supplier."""
    table = analysis.ranking.table.set_index("supplier")
    assert (table["tier"] != "insufficient evidence").sum() >= 3
    assert table.loc["acme", "tier"] == "gold" and table.loc["acme", "rank"] == 1
    shady = set(table.loc["shady", "gate_reasons"].split("; "))
    assert {"fake_codes", "resold_codes"} <= shady and table.loc["shady", "tier"] == "gated"
    feeder = set(table.loc["feeder", "gate_reasons"].split("; "))
    assert {"phantom_refunds", "hidden_fee"} <= feeder and table.loc["feeder", "tier"] == "gated"
    assert not table.loc["acme", "gated"] and not table.loc["slowpoke", "gated"]


def test_report_is_self_contained(demo: tuple[Path, str]) -> None:
    """report.html loads nothing from elsewhere: every image is inline base64 PNG."""
    text = (demo[0] / "report.html").read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    sources = re.findall(r"""<img[^>]*\ssrc=['"]([^'"]*)""", text)
    assert len(sources) >= 4
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<link" not in text and "<script" not in text


def test_report_states_verdict_first(demo: tuple[Path, str]) -> None:
    """The ranking, verdict sentences and evidence limits all come before the first figure."""
    text = (demo[0] / "report.html").read_text(encoding="utf-8")
    first_figure = text.index("<img")
    for marker in ("id=verdict", "class=order", "id=ranking", "class=verdicts", "id=limits"):
        assert text.index(marker) < first_figure, marker
    verdict = text[:first_figure]
    for supplier in ("acme", "slowpoke", "shady", "feeder", "flaky", "tiny"):
        assert supplier in verdict


def test_report_names_gate_reasons(demo: tuple[Path, str]) -> None:
    """Each gate appears in the verdict with its evidence: shady's bad codes and validity,
    feeder's uncredited refunds and hidden fee measured from the balance."""
    text = (demo[0] / "report.html").read_text(encoding="utf-8")
    verdict = text[:text.index("<img")]
    assert re.search(r"\d+ of \d+ codes already redeemed \(resold\)", verdict)
    assert re.search(r"\d+ of \d+ codes unknown to the issuer \(fake\)", verdict)
    assert "under the floor 0.95" in verdict
    assert re.search(r"\d+ of \d+ refunds marked completed but never credited", verdict)
    assert "undisclosed fee of 1.50 per order" in verdict
    assert "Gated: shady (" in verdict and "Gated: feeder (" in verdict


def test_report_says_what_evidence_cannot_tell(analysis: RunAnalysis) -> None:
    """Without a burst the report says percentiles are not measured; ties are named."""
    html = render_html(analysis, figs={})
    limits = html[html.index("id=limits"):]
    assert "No burst in these runs" in limits
    if any(len(g) > 1 for g in analysis.ranking.groups):
        assert "orders cannot separate" in limits


def test_rank_command_writes_csv(demo: tuple[Path, str], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """``trialbench rank RUN --out DIR`` prints the table, the order and the report's own
    headline, and writes ranking.csv and findings.csv."""
    assert main(["rank", str(demo[0]), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "supplier ranking" in out and "order:" in out
    report_headline = headline(analyse_runs([demo[0]]))
    assert " ".join(report_headline.split()) in " ".join(out.split())
    assert (tmp_path / "findings.csv").is_file()
    table = pd.read_csv(tmp_path / "ranking.csv")
    assert list(table.columns) == list(RANKING_COLUMNS)
    assert sorted(table["supplier"]) == ["acme", "feeder", "flaky", "shady", "slowpoke", "tiny"]
    assert (tmp_path / "ranking_beats.csv").is_file()


def test_report_command_writes_html(demo: tuple[Path, str], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """``trialbench report RUN --out DIR`` writes report.html there and prints its path."""
    assert main(["report", str(demo[0]), "--out", str(tmp_path)]) == 0
    assert str(tmp_path / "report.html") in capsys.readouterr().out
    assert (tmp_path / "report.html").stat().st_size > 10_000


def test_commands_name_a_missing_run(capsys: pytest.CaptureFixture[str]) -> None:
    """A run folder that does not exist is a one-line error with exit code 2."""
    assert main(["rank", "no/such/run"]) == 2
    assert "no such run folder" in capsys.readouterr().err


def test_burst_rows_add_a_timeline(analysis: RunAnalysis) -> None:
    """Burst rows (mode="burst") add the burst timeline figure; none without them."""
    assert figure_burst_timeline(analysis.tables.orders) is None
    assert "Burst timeline" not in figures(analysis)
    burst = analysis.tables.orders.assign(mode="burst", run_id="burst-run")
    orders = pd.concat([analysis.tables.orders, burst], ignore_index=True)
    with_burst = replace(analysis, tables=replace(analysis.tables, orders=orders))
    assert "Burst timeline" in figures(with_burst)


def test_burst_timeline_table_is_used(analysis: RunAnalysis) -> None:
    """A run's ``timeline`` table (per supplier and second) draws the timeline by itself."""
    rows = [{"run_id": "b", "second": sec, "supplier": name, "scheduled": 10, "sent": 10,
             "accepted": 9, "delivered": 9, "err_429": 1, "err_503": 0, "err_5xx": 0,
             "err_timeout": 0, "err_out_of_stock": 0, "partial_oversold": 0, "slipped": 0,
             "acceptance_p95_ms": 12.5}
            for sec in range(3) for name in ("acme", "tiny")]
    fig = figure_burst_timeline(analysis.tables.orders, pd.DataFrame(rows))
    assert fig is not None and len(fig.axes) == 3


def test_notebook_executes(demo: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """notebooks/compare_suppliers.ipynb runs top to bottom on the demo run, without errors."""
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("TRIALBENCH_RUN", str(demo[0]))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # silences jupyter_core's migration warning
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, kernel_name="python3", timeout=120,
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 5


# --------------------------------------------------------------------------- language (issue 14)


def _visible(html_text: str) -> str:
    """The report's text as a reader sees it: no tags, styles, images or the config dump."""
    text = re.sub(r"<style>.*?</style>|<pre>.*?</pre>", " ", html_text, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text))


def test_chinese_report_reads_without_english(analysis: RunAnalysis) -> None:
    """``lang=zh``: the page says lang=zh-CN, embeds the CJK glyphs it uses (readable
    without Chinese fonts), the tiers, gates and their evidence are in Chinese, and no
    tier, fault or state shows its English data name."""
    page = render_html(analysis, figs={}, lang="zh")
    assert "<html lang=zh-CN>" in page
    assert '@font-face{font-family:"trialbench-cjk";src:url(data:font/woff;base64,' in page
    verdict = _visible(page[:page.index("id=figures")])
    for words in ("结论", "金牌", "一票否决", "发卡方查无此码（伪造）", "已被兑换（二次售卖）",
                  "标记为已完成但从未到账", "余额被扣除未公开的费用，每单 1.50", "供应商",
                  "伪造卡密"):
        assert words in verdict, words
    english = re.findall(r"\b(gold|silver|bronze|gated|insufficient evidence|not_minted|"
                         r"fake_codes|resold_codes|phantom_refunds|hidden_fee|out_of_stock|"
                         r"Verdict|supplier|orders)\b", _visible(page))
    assert not english, english


def _with_paperwork(demo_run: Path, tmp_path: Path) -> Path:
    """A copy of the demo run whose scenario names acme 星辰卡盟, with a Steam
    authorisation for its products that lapses before the peak (a gate here)."""
    import shutil

    run = tmp_path / demo_run.name
    shutil.copytree(demo_run, run)
    manifest = json.loads((run / "manifest.json").read_text())
    scenario = manifest["scenario"]
    started = manifest["started_at"][:10]
    acme = next(s for s in scenario["suppliers"] if s["name"] == "acme")
    acme["display_name"] = "星辰卡盟"
    acme["qualifications"] = {"icp_filing": "浙ICP备12345678号", "authorisations": [
        {"brand": "Steam", "products": [p["sku"] for p in acme["products"]],
         "expires": started.replace(started[:4], str(int(started[:4]) + 1))}]}
    scenario["peak_date"] = started.replace(started[:4], str(int(started[:4]) + 2))
    scenario["qualification_checks"] = {"expiry_window_days": 60,
                                        "gate": ["authorisation_lapses_before_peak"]}
    (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return run


def test_display_name_and_qualifications_in_report_and_terminal(
        demo: tuple[Path, str], tmp_path: Path) -> None:
    """A supplier's Chinese display name shows in the report, the ranking printed in the
    terminal and the trial summary; its authorisation lapsing before the peak is flagged,
    gates it as the scenario asks, and the verdict says so."""
    from rich.console import Console

    from harness.report import print_analysis
    from harness.summary import render_table, supplier_summary

    analysis = analyse_runs([_with_paperwork(demo[0], tmp_path)])
    found = analysis.findings.set_index(["supplier", "kind"])
    assert found.loc[("acme", "authorisation_lapses_before_peak"), "gates"]
    assert "acme" in analysis.ranking.gated
    page = _visible(render_html(analysis, figs={}, lang="zh", embed_font=False))
    assert "星辰卡盟 一票否决" in page and "早于大促日" in page and "浙ICP备12345678号" in page
    console = Console(record=True, width=200)
    print_analysis(analysis, console, lang="zh")
    summary = supplier_summary([analysis.run_dirs[0]], analysis.fees)
    console.print(render_table(summary, "zh", analysis.display_names))
    printed = console.export_text()
    assert "星辰卡盟" in printed and "acme" not in printed
    assert "缺少品牌授权" not in printed  # Steam covers every product acme sells
    from harness.report import figure_png, figure_scores

    english = figure_scores(analysis.ranking, analysis.config, lang="en",
                            names=analysis.display_names)
    assert any("星辰卡盟" in label.get_text() for label in english.axes[0].get_yticklabels())
    figure_png(english)  # the name in an English figure draws too: no missing-glyph warning


def test_chinese_figures_use_a_cjk_font(analysis: RunAnalysis) -> None:
    """Every Chinese label of the zh figures resolves, through matplotlib's font lookup, to
    a font that has its glyphs (no boxes); drawing one raises no missing-glyph warning."""
    from matplotlib import font_manager
    from matplotlib.text import Text

    from harness.i18n.fonts import cjk_font, has_glyphs
    from harness.report import figure_png

    assert cjk_font() is not None, "no CJK font: pip install -e '.[zh]' (make does)"
    figs = figures(analysis, "zh")
    assert "交付时间" in figs and "分数区间" in figs
    chinese = 0
    for fig in figs.values():
        for label in fig.findobj(Text):
            words = label.get_text()
            if any(ord(c) > 0x2E80 for c in words):
                chinese += 1
                path = font_manager.findfont(label.get_fontproperties())
                assert has_glyphs(path, "".join(c for c in words if ord(c) > 0x2E80)), \
                    (words, path)
    assert chinese >= 10
    figure_png(figs["分数区间"])  # a missing glyph would warn, and warnings are errors


def test_without_a_cjk_font_figures_fall_back_to_english(
        analysis: RunAnalysis, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """No font with Chinese glyphs: zh figures get English labels and one warning says how
    to install a font, however many figures are drawn."""
    from harness.i18n import fonts

    monkeypatch.setattr(fonts, "cjk_font", lambda: None)
    monkeypatch.setattr(fonts, "_warned", [])
    first, second = figures(analysis, "zh"), figures(analysis, "zh")
    assert "Delivery time" in first and "Delivery time" in second
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "trialbench[zh]" in warnings[0]


def test_report_shows_the_history_trend_and_its_change_point(
        demo: tuple[Path, str], tmp_path: Path) -> None:
    """``report --history DIR`` adds each supplier's trend over the runs that ``check``
    indexed, with the worsening change point found, worded in the report's language."""
    write_validity_drop_index(tmp_path, red_after_drop=True)
    out = tmp_path / "out"
    assert main(["report", str(demo[0]), "--out", str(out), "--lang", "zh",
                 "--history", str(tmp_path)]) == 0
    page = _visible((out / "report.html").read_text(encoding="utf-8"))
    trend = page[page.index("历次运行的趋势"):page.index("图表")]
    assert "共 20 次运行" in trend and "卡密有效" in trend and "run-19" in trend
    assert "金牌" in trend and "银牌" in trend and "未通过" in trend
    assert re.search(r"卡密有效 在运行 run-1\d 发生变化：0\.9\d* → 0\.[89]\d*", trend), trend
    assert "（变差）" in trend
