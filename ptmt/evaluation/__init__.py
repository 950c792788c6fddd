"""The evaluation suite: PTMT against baselines and a static oracle on the simulated machine.

See ``benchmarks/evaluate.py`` (the command line) and ``docs/results.md`` (what the numbers mean).
"""
