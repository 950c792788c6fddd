"""`ptmt report` on the command line: table, JSON, self-contained HTML, --run-ab, clear errors."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ptmt.cli import app
from ptmt.db import open_storage
from ptmt.report.report import build_report

from .conftest import REPEAT

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, ["report", *args], env={"COLUMNS": "200"})


class _Page(HTMLParser):
    """Collects tags, the URLs they reference and the text, and checks that tags balance."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str, str]] = []
        self.tags: list[str] = []
        self.stack: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag not in self.VOID:
            self.stack.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "action", "data") and value is not None:
                self.urls.append((tag, name, value))

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_table_output(ab_db: str) -> None:
    res = _run("--db", ab_db, "--no-sensitivity")
    assert res.exit_code == 0, res.output
    assert "Tuned vs default" in res.output and "autonuma/gups" in res.output
    assert "Tuning history of run" in res.output and "Provenance of every run" in res.output
    assert re.search(r"\[[-+]\d+\.\d%, [-+]\d+\.\d%\]", res.output)  # the interval is printed
    assert f"only {REPEAT} pairs" in res.output


def test_json_structure(ab_db: str) -> None:
    res = _run("--db", ab_db, "--format", "json", "--no-sensitivity")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert set(doc) >= {"database", "generated_at", "ptmt_version", "groups", "runs", "unpaired_runs", "sensitivity"}
    [g] = doc["groups"]
    assert (g["backend"], g["workload"], g["objective_unit"]) == ("autonuma", "gups", "ops/s")
    c = g["comparison"]
    assert c["n"] == REPEAT and c["ci_low"] <= c["improvement"] <= c["ci_high"]
    assert c["verdict"] in ("better", "worse", "no significant difference")
    assert len(g["pairs"]) == REPEAT and len(g["history"]) == REPEAT
    mean = sum(p["improvement"] for p in g["pairs"]) / REPEAT
    assert c["improvement"] == pytest.approx(mean)
    assert len(doc["runs"]) == 2 * REPEAT
    assert {"host", "kernel", "topology", "catalog_hash", "ptmt_version", "seed"} <= set(doc["runs"][0])


def test_html_is_self_contained_and_parses(ab_db: str, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    res = _run("--db", ab_db, "--format", "html", "--output", str(out), "--no-sensitivity")
    assert res.exit_code == 0, res.output
    page = out.read_text(encoding="utf-8")
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", page, re.I)
    assert "<script" not in page.lower()
    parser = _Page()
    parser.feed(page)
    parser.close()
    assert parser.stack == [], parser.stack
    images = [v for tag, name, v in parser.urls if tag == "img"]
    assert len(images) >= 3  # improvement, objective over time, knob values
    assert all(v.startswith("data:image/png;base64,") for v in images)
    assert all(not v.startswith(("http", "//")) for _, _, v in parser.urls)
    assert "autonuma" in "".join(parser.text)


def test_html_escapes_text_from_the_database(ab_db: str, tmp_path: Path) -> None:
    """A reason or label with markup shows as text, never as markup."""
    import shutil

    from sqlalchemy import text

    copy = tmp_path / "copy.db"
    shutil.copy(ab_db.removeprefix("sqlite:///"), copy)
    url = f"sqlite:///{copy}"
    with open_storage(url, create=False) as s, s.engine.begin() as c:
        c.execute(text("UPDATE tuning_events SET reason = '<script>alert(1)</script> & <b>x</b>'"))
        c.execute(text("UPDATE tuning_runs SET label = '<img src=http://evil/>'"))
    from ptmt.report.html import render_html

    with open_storage(url, create=False) as s:
        page = render_html(build_report(s, sensitivity=False))
    assert "<script>" not in page and "<img src=http" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;x&lt;/b&gt;" in page


def test_html_alongside_the_table(ab_db: str, tmp_path: Path) -> None:
    out = tmp_path / "side.html"
    res = _run("--db", ab_db, "--html", str(out), "--no-sensitivity")
    assert res.exit_code == 0, res.output
    assert "Tuned vs default" in res.output and str(out.resolve()) in res.output
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_a_single_pair_from_ptmt_tune_says_n_1(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'one.db'}"
    res = runner.invoke(app, ["tune", "--platform", "sim", "--backend", "autonuma", "--workload", "gups",
                              "--duration", "120", "--search", "--db", url])
    assert res.exit_code == 0, res.output
    res = _run("--db", url, "--format", "json", "--no-sensitivity")
    assert res.exit_code == 0, res.output
    c = json.loads(res.stdout)["groups"][0]["comparison"]
    assert c["n"] == 1 and c["ci_low"] is None and c["ci_high"] is None
    assert c["verdict"] == "not enough runs" and "no confidence interval" in c["note"]
    table = _run("--db", url, "--no-sensitivity")
    assert "n/a (n=1)" in table.output and "not enough runs" in table.output


def test_run_ab_records_pairs_then_reports(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ab.db'}"
    res = _run("--run-ab", "--backend", "tpp", "--workload", "btree", "--repeat", "2", "--duration", "100",
               "--search", "--db", url, "--format", "json", "--no-sensitivity")
    assert res.exit_code == 0, res.output
    [g] = json.loads(res.stdout)["groups"]
    assert (g["backend"], g["workload"], g["duration_s"], g["comparison"]["n"]) == ("tpp", "btree", 100.0, 2)
    assert [p["seed"] for p in g["pairs"]] == [0, 1]
    with open_storage(url, create=False) as s:
        runs = s.tuning_runs_frame()
    assert runs.sort_values("started_at")["mode"].tolist() == ["default", "tune", "default", "tune"]
    assert (runs["status"] == "finished").all() and (runs["intervals"] == 10).all()


@pytest.mark.parametrize(("args", "message"), [
    (["--backend", "nope"], r"unknown backend 'nope' \(known: .*autonuma"),
    (["--backend", "tpp"], r"no tuning runs of backend 'tpp'.*it holds runs of: autonuma"),
    (["--workload", "stream"], r"workload 'stream'.*workloads: gups"),
    (["--format", "pdf"], r"--format 'pdf': expected one of table, json, html"),
])
def test_bad_filters_are_clear_errors(ab_db: str, args: list[str], message: str) -> None:
    res = _run("--db", ab_db, *args)
    assert res.exit_code == 1
    assert re.search(message, res.output.replace("\n", " ")), res.output


def test_database_errors(tmp_path: Path) -> None:
    missing = tmp_path / "none" / "x.db"
    res = _run("--db", f"sqlite:///{missing}")
    assert res.exit_code == 1 and "no such file" in res.output
    assert not missing.parent.exists()  # reading never creates a database
    garbage = tmp_path / "garbage.db"
    garbage.write_text("not a database\n")
    res = _run("--db", str(garbage))
    assert res.exit_code == 1 and "file is not a database" in res.output
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    with open_storage(empty):
        pass
    res = _run("--db", empty)
    assert res.exit_code == 1 and "no tuning runs in" in res.output and "--run-ab" in res.output


@pytest.mark.parametrize(("args", "message"), [
    (["--backend", "autonuma"], r"--run-ab needs --backend B and --workload W"),
    (["--backend", "autonuma", "--workload", "nope"], r"unknown workload 'nope' \(built-in: .*gups"),
    (["--backend", "nope", "--workload", "gups"], r"unknown backend 'nope'"),
    (["--backend", "autonuma", "--workload", "gups", "--repeat", "0"], r"--repeat must be at least 1"),
])
def test_run_ab_bad_input(tmp_path: Path, args: list[str], message: str) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    res = _run("--run-ab", *args, "--db", url, "--duration", "50")
    assert res.exit_code == 1
    assert re.search(message, res.output.replace("\n", " ")), res.output
