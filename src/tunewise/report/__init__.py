"""The report: the decision and its evidence as report.html (self-contained) and report.md.

Rendered from results.json alone, so any past run can be re-rendered with `tunewise report RUN`.
"""

from tunewise.report.render import render_report

__all__ = ["render_report"]
