"""``ptmt report``: tuned vs default with confidence intervals, tuning history, plots (docs/report.md).

Modules: :mod:`~ptmt.report.stats` (the statistics, on plain numbers), :mod:`~ptmt.report.data`
(reading and pairing runs from the database), :mod:`~ptmt.report.report` (the report structure and
its JSON), :mod:`~ptmt.report.table`, :mod:`~ptmt.report.plots`, :mod:`~ptmt.report.html`
(outputs), :mod:`~ptmt.report.ab` (running interleaved pairs) and :mod:`~ptmt.report.cli`.
"""
