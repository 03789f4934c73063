"""CI checks of supplier SLAs: thresholds, baselines, change points over a history.

``evaluate.check_runs`` judges runs and returns a ``CheckReport`` (exit code, results);
``sla.load_sla`` reads an SLA file; ``history.load_trend`` gives a history's trend as plain
data for reports; ``junit.junit_xml``, ``summary.markdown`` and ``summary.terminal_text``
render a report. Import them from their modules: this package imports nothing itself, so
reading a scenario's ``sla:`` (``harness.check.sla``) does not load scipy.stats, which
only judging needs (a burst worker reads the scenario at start-up).
"""
