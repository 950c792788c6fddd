"""``python -m ptmt``: the same as the ``ptmt`` command."""

from ptmt.cli import main

main()
