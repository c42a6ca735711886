"""Rendering what evaluation returned: report.md (report, report_matrix, textfmt), the demo's headline, print pages
at size (printing), the HTML pages, and the one runner that writes a run's report files (runner)."""
