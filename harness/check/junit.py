"""JUnit XML for CI: one test suite per supplier, one test case per check.

A breach or a regression is a ``<failure>``, a run or supplier that cannot be judged (a
harness fault: interrupted, unreachable, no orders) an ``<error>``, too little data a
``<skipped>``; every message gives baseline → new, the interval and the p-value.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from harness.check.evaluate import CheckReport
from harness.check.summary import case_name, message
from harness.i18n import DEFAULT_LANG


def junit_xml(report: CheckReport, lang: str = DEFAULT_LANG) -> str:
    """The report as a JUnit XML document (``<testsuites>``)."""
    root = ET.Element("testsuites", name="trialbench check")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for supplier in report.suppliers:
        own = [r for r in report.results if r.supplier == supplier]
        counts = {"tests": len(own), "failures": sum(r.status == "fail" for r in own),
                  "errors": sum(r.status == "error" for r in own),
                  "skipped": sum(r.status == "skipped" for r in own)}
        suite = ET.SubElement(root, "testsuite", {"name": supplier,
                                                  **{k: str(v) for k, v in counts.items()}})
        for key, value in counts.items():
            totals[key] += value
        for r in own:
            case = ET.SubElement(suite, "testcase", name=case_name(r),
                                 classname=f"trialbench.{supplier}.{r.layer}")
            text = message(r, lang)
            if r.status == "fail":
                ET.SubElement(case, "failure", message=text, type=r.reason).text = text
            elif r.status == "error":
                ET.SubElement(case, "error", message=text, type=r.reason).text = text
            elif r.status == "skipped":
                ET.SubElement(case, "skipped", message=text)
            else:
                ET.SubElement(case, "system-out").text = text
    for key, value in totals.items():
        root.set(key, str(value))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def write_junit(report: CheckReport, path: Path, lang: str = DEFAULT_LANG) -> Path:
    """Write :func:`junit_xml` to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(junit_xml(report, lang), encoding="utf-8")
    return path
