"""The per-backend averages and the targets judged on them (ptmt.evaluation.summary)."""

from __future__ import annotations

import pytest

from ptmt.evaluation.summary import Verdict, aggregate, backend_means, check_targets, summary_markdown


def row(backend: str, workload: str, method: str, imp: float, frac: float | None = None) -> dict:
    return {"backend": backend, "workload": workload, "method": method, "improvement": imp,
            "headroom_fraction": frac}


def rows_for(backend: str, hybrid: dict[str, float], oracle: dict[str, float], phased: tuple[str, ...] = (),
             baseline: float = 0.0) -> list[dict]:
    out = []
    for w, o in oracle.items():
        frac = hybrid[w] / o if o > 0.01 else None
        out += [row(backend, w, "default", 0.0), row(backend, w, "hybrid", hybrid[w], frac),
                row(backend, w, "oracle", o), row(backend, w, "rl_only", baseline, baseline / o if frac else None),
                row(backend, w, "tpe", baseline - 0.01)]
        if w in phased:
            out.append(row(backend, w, "phase_oracle", o + 0.02, (o + 0.02) / o))
    return out


def test_every_target_met_on_a_backend_that_meets_them() -> None:
    rows = rows_for("upm", {"gups": 0.10, "btree": 0.0, "shift": 0.08}, {"gups": 0.10, "btree": 0.0, "shift": 0.07},
                    phased=("shift",), baseline=0.01)
    verdicts = {v.target: v for v in check_targets(rows)}
    assert all(v.met for v in verdicts.values()), verdicts
    assert verdicts["headroom"].detail == "107% of the oracle's headroom (mean of 2 workloads; target 90%)"
    assert verdicts["phases"].detail == "shift +8.0% vs oracle +7.0%"
    assert verdicts["baselines"].detail == "hybrid +6.00%; rl_only +1.00%, tpe +0.00%"


def test_each_target_can_fail_and_says_why() -> None:
    rows = rows_for("tpp", {"gups": 0.02, "btree": -0.03, "shift": 0.05}, {"gups": 0.10, "btree": 0.0, "shift": 0.07},
                    phased=("shift",), baseline=0.02)
    v = {x.target: x for x in check_targets(rows)}
    assert v["headroom"] == Verdict("headroom", "tpp", False,
                                    "46% of the oracle's headroom (mean of 2 workloads; target 90%)")
    assert v["worst"] == Verdict("worst", "tpp", False, "worst workload btree -3.0% (allowed -2%)")
    assert v["phases"].met is False and v["phases"].detail == "shift +5.0% vs oracle +7.0%"
    assert v["baselines"].met is False and v["baselines"].detail.endswith("(not beaten: rl_only)")


def test_nothing_to_judge_is_neither_met_nor_failed() -> None:
    rows = [row("colloid", "stream", "hybrid", 0.0), row("colloid", "stream", "oracle", 0.0)]
    v = {x.target: x for x in check_targets(rows)}
    assert v["headroom"].met is None and v["headroom"].detail == "no workload with measurable oracle headroom"
    assert v["baselines"].met is None and v["phases"].met is None
    assert v["worst"].met is True
    assert check_targets([row("upm", "gups", "oracle", 0.1)]) == [Verdict("run", "upm", None, "hybrid was not run")]


def test_backend_means_and_the_markdown_agree() -> None:
    rows = rows_for("autonuma", {"a": 0.04, "b": 0.0}, {"a": 0.05, "b": 0.0}) + \
        rows_for("upm", {"a": 0.10, "b": 0.02}, {"a": 0.12, "b": 0.02})
    means = {(m["backend"], m["method"]): m for m in backend_means(rows, ["hybrid", "oracle"])}
    assert means[("autonuma", "hybrid")]["improvement"] == pytest.approx(0.02)
    assert means[("upm", "hybrid")]["headroom_fraction"] == pytest.approx((0.10 / 0.12 + 1.0) / 2)
    assert means[("upm", "hybrid")]["of"] == 2 and means[("autonuma", "hybrid")]["of"] == 1
    text = summary_markdown(rows, ["default", "hybrid", "oracle"])
    assert "| autonuma | +2.00% (80% of 1) | +2.50% |" in text
    assert "| worst | upm | yes | worst workload b +2.0% (allowed -2%) |" in text
    assert "| phases | upm | n/a | no workload with phases |" in text


def run(seed: int, hybrid: float, oracle: float | None = None, workload: str = "gups") -> dict:
    """One evaluate.py run: the default's mean is 100, a method's mean follows its improvement."""
    methods = {"default": {"improvement": 0.0, "mean": 100.0, "intervals_to_90": None},
               "hybrid": {"improvement": hybrid, "mean": 100.0 * (1 + hybrid), "intervals_to_90": 10 + seed}}
    out = {"backend": "upm", "workload": workload, "seed": seed, "agent": "shipped", "default_mean": 100.0,
           "methods": methods}
    if oracle is not None:
        methods["oracle"] = {"improvement": oracle, "mean": 100.0 * (1 + oracle), "intervals_to_90": None}
        out["noise_threshold"] = 0.01
    return out


def test_aggregate_over_seeds_compares_the_headroom_on_the_seeds_that_ran_the_oracle() -> None:
    """Seed 0 ran the oracle, seeds 1 and 2 did not: the mean is over three seeds, the headroom
    fraction over seed 0 alone (hybrid +8% of the oracle's +10%, not the three-seed +5%)."""
    rows = aggregate([run(0, 0.08, 0.10), run(1, 0.02), run(2, 0.05)], ["default", "hybrid", "oracle"])
    hybrid = next(r for r in rows if r["method"] == "hybrid")
    assert hybrid["improvement"] == pytest.approx(0.05) and hybrid["seeds"] == 3
    assert hybrid["headroom_fraction"] == pytest.approx(0.8)
    assert hybrid["intervals_to_90"] == 11 and hybrid["ci95"] is not None
    assert hybrid["ci95"][0] <= 0.05 <= hybrid["ci95"][1]
    oracle = next(r for r in rows if r["method"] == "oracle")
    assert oracle["seeds"] == 1 and oracle["ci95"] is None
    # an oracle within the noise leaves no fraction to report
    flat = aggregate([run(0, 0.01, 0.005, workload="btree")], ["hybrid", "oracle"])
    assert all(r["headroom_fraction"] is None for r in flat)


def _run(backend: str, workload: str, seed: int, default: float, **methods: float) -> dict:
    ms = {"default": {"improvement": 0.0, "mean": default, "intervals_to_90": None}}
    ms.update({m: {"improvement": v, "mean": default * (1 + v), "intervals_to_90": 10} for m, v in methods.items()})
    return {"backend": backend, "workload": workload, "seed": seed, "methods": ms, "default_mean": default,
            "noise_threshold": 0.01, "agent": "shipped"}


def test_merged_runs_add_methods_and_replace_only_what_is_named() -> None:
    from ptmt.evaluation.summary import MergeError, merge_runs

    first = [_run("tpp", "gups", 0, 100.0, hybrid=0.01, oracle=0.05), _run("tpp", "gups", 1, 90.0, hybrid=0.02)]
    again = [_run("tpp", "gups", 0, 100.0, hybrid=0.03)]
    other_seed = [_run("tpp", "btree", 0, 50.0, hybrid=0.0)]
    with pytest.raises(MergeError, match=r"^tpp gups seed 0 \(a.json and b.json\): both measured hybrid; "
                                         r"pass --replace hybrid to take the later file's$"):
        merge_runs([("a.json", first), ("b.json", again)])
    runs = merge_runs([("a.json", first), ("b.json", again), ("c.json", other_seed)], replace=["hybrid"])
    by_key = {(r["workload"], r["seed"]): r["methods"] for r in runs}
    assert by_key["gups", 0]["hybrid"]["improvement"] == 0.03  # re-measured
    assert by_key["gups", 0]["oracle"]["improvement"] == 0.05  # kept from the first file
    assert by_key["gups", 1]["hybrid"]["improvement"] == 0.02 and len(runs) == 3
    assert first[0]["methods"]["hybrid"]["improvement"] == 0.01  # the inputs are not modified
    rows = aggregate(runs, ["default", "hybrid", "oracle"])
    gups = {r["method"]: r["improvement"] for r in rows if r["workload"] == "gups"}
    assert gups["hybrid"] == pytest.approx(0.025)  # seeds 0 (re-measured) and 1
    # what a later file measured beside its methods comes along; what the first had is kept
    late = _run("tpp", "gups", 0, 100.0, late_oracle=0.04)
    late.update(late_noise_threshold=0.02, noise_threshold=0.5)
    with_late = {(r["workload"], r["seed"]): r for r in merge_runs([("a.json", first), ("d.json", [late])])}
    assert with_late["gups", 0]["late_noise_threshold"] == 0.02
    assert with_late["gups", 0]["noise_threshold"] == 0.01
    # a re-measured oracle brings its own noise floor and configuration; the final configurations add up
    first[0].update(oracle_config={"k": 1}, oracle_from="grid", final_configs={"rl_only": {"k": 2}})
    oracle = _run("tpp", "gups", 0, 100.0, hybrid=0.03, oracle=0.06)
    oracle.update(noise_threshold=0.02, oracle_config={"k": 3}, oracle_from="hybrid", final_configs={"hybrid": {"k": 3}})
    redone = {(r["workload"], r["seed"]): r for r in merge_runs([("a.json", first), ("e.json", [oracle])],
                                                                replace=["hybrid", "oracle"])}["gups", 0]
    assert redone["methods"]["oracle"]["improvement"] == 0.06
    assert (redone["noise_threshold"], redone["oracle_config"], redone["oracle_from"]) == (0.02, {"k": 3}, "hybrid")
    assert redone["final_configs"] == {"rl_only": {"k": 2}, "hybrid": {"k": 3}}
    with pytest.raises(MergeError, match="both measured oracle; pass --replace oracle"):
        merge_runs([("a.json", first), ("e.json", [oracle])], replace=["hybrid"])


def test_the_databases_methods_are_averaged_over_sweep_seeds_and_the_others_are_not() -> None:
    """hybrid and db_only query the suite database: a file of another sweep seed adds a measurement
    of them to the same run (the run's result is their mean), where a second measurement of any
    other method, or of the same sweep seed, still needs --replace."""
    from ptmt.evaluation.summary import MergeError, merge_runs

    def sweep(seed: int, s: int, **methods: float) -> dict:
        return {**_run("tpp", "gups", seed, 100.0, **methods), "sweep_seed": s}

    first = [sweep(0, 0, hybrid=0.04, db_only=0.02, oracle=0.10), sweep(1, 0, hybrid=0.06, db_only=0.03)]
    second = [sweep(0, 1, hybrid=0.02, db_only=0.05), sweep(1, 1, hybrid=0.01)]
    third = [sweep(0, 2, hybrid=0.03)]
    runs = {r["seed"]: r for r in merge_runs([("a", first), ("b", second), ("c", third)])}
    h0 = runs[0]["methods"]["hybrid"]
    assert h0["improvement"] == pytest.approx(0.03) and h0["mean"] == pytest.approx(103.0)
    assert h0["sweep_seeds"] == [0, 1, 2] and h0["per_sweep"] == {"0": 0.04, "1": 0.02, "2": 0.03}
    assert runs[0]["methods"]["db_only"]["improvement"] == pytest.approx(0.035)
    assert runs[1]["methods"]["hybrid"]["improvement"] == pytest.approx(0.035)
    assert runs[1]["methods"]["db_only"] == {**first[1]["methods"]["db_only"], "sweep_seeds": [0],
                                             "per_sweep": {"0": 0.03}}
    assert runs[0]["methods"]["oracle"]["improvement"] == 0.10
    rows = {r["method"]: r for r in aggregate(list(runs.values()), ["hybrid", "db_only", "oracle"])}
    assert rows["hybrid"]["improvement"] == pytest.approx((0.03 + 0.035) / 2)
    assert rows["hybrid"]["headroom_fraction"] == pytest.approx(0.3)  # seed 0 ran the oracle: 0.03 of 0.10
    # the same sweep seed twice, or another method twice, is a re-measurement
    with pytest.raises(MergeError, match=r"^tpp gups seed 0 \(a and d\): both measured hybrid on sweep seed 1; "
                                         r"pass --replace hybrid"):
        merge_runs([("a", second), ("d", [sweep(0, 1, hybrid=0.09)])])
    with pytest.raises(MergeError, match="both measured oracle; pass --replace oracle"):
        merge_runs([("a", first), ("d", [sweep(0, 1, oracle=0.2)])])
    redone = {r["seed"]: r for r in merge_runs([("a", first), ("b", second), ("d", [sweep(0, 1, hybrid=0.08)])],
                                                replace=["hybrid"])}
    assert redone[0]["methods"]["hybrid"]["per_sweep"] == {"0": 0.04, "1": 0.08}


def test_a_run_of_another_simulator_or_seed_is_not_merged() -> None:
    from ptmt.evaluation.summary import MergeError, merge_runs

    with pytest.raises(MergeError, match=r"not the same run, the default objective differs \(100.0 vs 101.0\)"):
        merge_runs([("a.json", [_run("upm", "gups", 0, 100.0, hybrid=0.1)]),
                    ("b.json", [_run("upm", "gups", 0, 101.0, rl_only=0.1)])], replace=["hybrid"])


def test_the_share_of_the_late_oracle_is_reported_beside_the_headroom() -> None:
    """With the late oracle run, each row has the share of its gain, and the summary a table of it;
    the targets stay judged on the static oracle."""
    def run_with(workload: str, hybrid: float, oracle: float, late: float) -> dict:
        r = _run("colloid", workload, 0, 100.0, hybrid=hybrid, oracle=oracle, late_oracle=late)
        r["late_noise_threshold"] = 0.01
        return r
    runs = [run_with("xsbench", 0.02, 0.05, 0.025), run_with("npb-cg", -0.004, 0.02, -0.008)]
    rows = aggregate(runs, ["default", "hybrid", "oracle", "late_oracle"])
    by = {(r["workload"], r["method"]): r for r in rows}
    assert by[("xsbench", "hybrid")]["headroom_fraction"] == pytest.approx(0.4)
    assert by[("xsbench", "hybrid")]["reachable_fraction"] == pytest.approx(0.8)
    assert by[("npb-cg", "hybrid")]["reachable_fraction"] is None  # no gain left once the workload runs
    means = {(m["backend"], m["method"]): m for m in backend_means(rows, ["hybrid"])}
    assert means[("colloid", "hybrid")]["reachable_fraction"] == pytest.approx(0.8)
    assert means[("colloid", "hybrid")]["reachable_of"] == 1
    text = summary_markdown(rows, ["default", "hybrid", "oracle", "late_oracle"])
    # the late oracle's own share: xsbench 0.025 of 0.05, npb-cg -0.008 of 0.02
    assert "| colloid | +3.50% | +0.85% | 5% (of 2) | 10% (of 2) | 80% (of 1) |" in text
    assert "| headroom | colloid | **no** | 10% of the oracle's headroom (mean of 2 workloads; target 90%) |" in text
    # without the late oracle there is no such table
    assert "late oracle" not in summary_markdown(aggregate(runs[:1], ["hybrid", "oracle"]), ["hybrid", "oracle"])


@pytest.mark.parametrize("name", ["eval.json", "eval.json.gz"])
def test_an_evaluation_file_reads_back_what_was_written(tmp_path, name) -> None:
    from ptmt.evaluation.summary import read_runs, write_evaluation

    runs = [{**_run("upm", "gups", 0, 100.0, hybrid=0.1), "sweep_seed": 2}, _run("upm", "gups", 1, 99.0, hybrid=0.2)]
    path = tmp_path / name
    write_evaluation(path, {"args": {}, "rows": [], "runs": runs})
    assert read_runs(path) == [runs[0], {**runs[1], "sweep_seed": 0}]
    # a file written before runs recorded their sweep seed: the file's --sweep-seed
    write_evaluation(tmp_path / "older.json", {"args": {"sweep_seed": "1"}, "rows": [], "runs": runs[1:]})
    assert read_runs(tmp_path / "older.json") == [{**runs[1], "sweep_seed": 1}]
    again = tmp_path / ("again-" + name)
    write_evaluation(again, {"args": {}, "rows": [], "runs": runs})
    assert again.read_bytes() == path.read_bytes()  # the same runs, the same bytes (a kept file diffs clean)
    if name.endswith(".gz"):
        assert path.read_bytes()[:2] == b"\x1f\x8b"


def test_a_file_that_is_not_an_evaluation_is_named_with_the_reason(tmp_path) -> None:
    from ptmt.evaluation.summary import EvaluationFileError, read_runs

    (tmp_path / "rows.json").write_text('{"rows": []}')
    with pytest.raises(EvaluationFileError, match=r"rows.json: not an evaluate.py --json file \('runs'\)$"):
        read_runs(tmp_path / "rows.json")
    (tmp_path / "plain.json.gz").write_text('{"runs": []}')  # named .gz but not compressed
    with pytest.raises(EvaluationFileError, match=r"plain.json.gz: not an evaluate.py --json file \(Not a gzipped"):
        read_runs(tmp_path / "plain.json.gz")
    (tmp_path / "odd.json").write_text('{"runs": [1, 2]}')
    with pytest.raises(EvaluationFileError, match=r"odd.json: not an evaluate.py --json file \('runs' is not a list"):
        read_runs(tmp_path / "odd.json")
    with pytest.raises(EvaluationFileError, match=r"missing.json: not an evaluate.py --json file \(\[Errno 2\]"):
        read_runs(tmp_path / "missing.json")



def test_the_results_page_shows_what_its_kept_evaluation_files_render() -> None:
    """docs/results.md's table is the render of the files kept in docs/results/, word for word: a
    table edited by hand, or files re-measured without rendering the page again, fail here."""
    import re
    from pathlib import Path

    from ptmt.evaluation.summary import render_files

    docs = Path(__file__).resolve().parents[2] / "docs"
    page = (docs / "results.md").read_text()
    blocks = re.findall(r"<!-- rendered by: python benchmarks/evaluate.py --from-json (\S+)(?: --replace (\S+))? -->\n"
                        r"(.*?)<!-- end of render -->", page, flags=re.S)
    assert blocks, "docs/results.md has no rendered block"
    for files, replace, shown in blocks:
        paths = [docs.parent / f for f in files.split(",")]
        assert all(p.parent == docs / "results" for p in paths), files
        assert shown.strip() == render_files(paths, replace.split(",") if replace else ()).strip()
