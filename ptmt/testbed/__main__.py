"""``python -m ptmt.testbed`` = ``ptmt testbed``."""

from ptmt.testbed.cli import testbed_app

testbed_app(prog_name="ptmt testbed")
