"""CI checks of supplier SLAs: thresholds, baselines, change points over a history.

``check_runs`` judges runs and returns a ``CheckReport`` (exit code, results); ``load_sla``
reads an SLA file; ``load_trend`` gives a history's trend as plain data for reports;
``junit_xml``, ``markdown`` and ``terminal_text`` render a report.
"""

from harness.check.evaluate import CheckReport, CheckResult, check_runs
from harness.check.history import Trend, TrendChange, load_trend
from harness.check.junit import junit_xml, write_junit
from harness.check.sla import SlaConfig, SlaError, Threshold, load_sla, parse_expression
from harness.check.summary import markdown, terminal_text, trend_text

__all__ = [
    "CheckReport",
    "CheckResult",
    "SlaConfig",
    "SlaError",
    "Threshold",
    "Trend",
    "TrendChange",
    "check_runs",
    "junit_xml",
    "load_sla",
    "load_trend",
    "markdown",
    "parse_expression",
    "terminal_text",
    "trend_text",
    "write_junit",
]
