"""The report a user opens: ``edgekd report RUN`` renders report/index.html and report/report.md."""

from edgekd.report.render import render_report

__all__ = ["render_report"]
