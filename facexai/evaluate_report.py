"""The old import path of ``facexai evaluate``'s report, kept for scripts that still use it.

New code imports :mod:`facexai.evaluate.report` and :mod:`facexai.evaluate.figures`.
"""

from matplotlib.figure import Figure

from facexai.evaluate.figures import GALLERY_VIEWS, safe_name
from facexai.evaluate.report import write_csv, write_json, write_markdown, write_report

__all__ = ["GALLERY_VIEWS", "Figure", "safe_name", "write_csv", "write_json", "write_markdown", "write_report"]
