"""`ptmt profile` on the simulated machine: a sweep end to end, --workers, --in-run, resume."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from ptmt.db import open_storage
from ptmt.offline.cli import profile
from ptmt.offline.profile import ProfileOptions, run_profile

app = typer.Typer()
app.command("profile")(profile)
app.command("noop")(lambda: None)


def test_sim_sweep_end_to_end_through_the_cli(tmp_path):
    db = f"sqlite:///{tmp_path / 'p.db'}"
    args = ["profile", "--backend", "tpp", "--workload", "gups", "--platform", "sim", "--budget", "6",
            "--duration", "4", "--interval", "1", "--db", db, "--seed", "3", "--json"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["trials"]["done"] == 6 and summary["ran"] == 6
    assert summary["unit"] == "ops/s" and summary["direction"] == "max"
    assert "demote_scale_factor" in summary["knobs"]  # the tpp-flavoured simulated kernel has it
    assert summary["best"] >= summary["default"] > 0
    with open_storage(db) as store:
        frame = store.trials_frame(summary["study"])
        samples = store.samples_frame(study=summary["study"])
        studies = store.studies_frame()
    assert list(frame["ordinal"]) == list(range(6)) and set(frame["status"]) == {"done"}
    assert (samples.groupby("trial_id").size() == 4).all()
    assert samples["objective"].gt(0).all() and samples["pgpromote_success"].ge(0).all()
    assert {"perf.instructions", "perf.cycles"} <= set(samples.columns)
    assert studies.loc[0, "host"].startswith("sim:") and studies.loc[0, "objective_direction"] == "max"
    again = CliRunner().invoke(app, args)  # resumed: nothing left to run
    assert json.loads(again.stdout)["ran"] == 0
    text = CliRunner().invoke(app, args[:-1] + ["--no-progress"])
    assert "6 done (0 run now)" in text.stdout and "best " in text.stdout


def test_a_one_knob_at_a_time_screen_measures_every_point_without_a_budget(tmp_path):
    from ptmt.catalog import load_catalog

    db = f"sqlite:///{tmp_path / 'screen.db'}"
    res = CliRunner().invoke(app, ["profile", "--backend", "upm", "--workload", "gups", "--platform", "sim",
                                   "--strategy", "oat", "--duration", "2", "--interval", "1", "--db", db,
                                   "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    with open_storage(db) as store:
        frame = store.trials_frame(summary["study"])
    defaults = load_catalog("upm").defaults()
    knobs = [c for c in frame.columns if c.startswith("knob.")]
    moved = frame[knobs].apply(lambda row: sum(row[k] != defaults[k.removeprefix("knob.")] for k in knobs),
                               axis=1).tolist()
    assert moved[0] == 0 and moved[1:] == [1] * (len(moved) - 1)  # the defaults, then one knob each
    assert summary["trials"]["done"] == len(frame) == 1 + (6 - 1) + (4 - 1) + (5 - 1)  # upm's 12 points


def test_a_tpe_study_plans_round_by_round_the_same_with_any_number_of_workers(tmp_path):
    from ptmt.catalog import load_catalog
    from ptmt.offline.sampling import Sampler, plan_configurations

    def plan(db):
        with open_storage(db) as store:
            trials = sorted(store.trials(1), key=lambda t: t.ordinal)
            return [(dict(store.get_configuration(t.configuration_id).knobs), t.repetition, t.objective)
                    for t in trials]

    base = dict(backend="tpp", workload="gups", platform="sim", strategy="tpe", budget=10, repeat=2, duration=3,
                interval=1, seed=4, show_progress=False)
    one = f"sqlite:///{tmp_path / 'one.db'}"
    summary = run_profile(ProfileOptions(**base, db=one))
    assert summary.ran == 20 and summary.counts["done"] == 20
    serial = plan(one)
    start = plan_configurations(load_catalog("tpp"), "sobol", 8, seed=4)  # 8: the start of a budget of 10
    assert [(c, rep) for c, rep, _ in serial[:16]] == [(c, rep) for rep in (0, 1) for c in start]
    later = [c for c, _, _ in serial[16:]]
    assert later[:2] == later[2:] and all(c not in start for c in later)  # a round of 4 cut to the budget
    # the round is TPE's answer to what the start measured (both repetitions), not a blind draw
    history = [(c, objective) for c, _, objective in serial[:16]]
    assert all(objective > 0 for _, objective in history)
    assert Sampler(load_catalog("tpp")).suggest(history, 2, seed=4) == later[:2]
    assert Sampler(load_catalog("tpp")).suggest([(c, None) for c, _ in history], 2, seed=4) != later[:2]
    two = f"sqlite:///{tmp_path / 'two.db'}"
    assert run_profile(ProfileOptions(**base, db=two, workers=2)).ran == 20
    assert plan(two) == serial  # a round depends on the history and the seed, not on who ran it
    assert run_profile(ProfileOptions(**base, db=one)).ran == 0  # complete: resuming plans nothing more


def test_two_workers_split_a_sim_study(tmp_path):
    db = f"sqlite:///{tmp_path / 'p.db'}"
    opts = ProfileOptions(backend="autonuma", workload="silo-ycsb", platform="sim", budget=12, repeat=2,
                          duration=3, interval=1, db=db, workers=2, seed=5, show_progress=False)
    summary = run_profile(opts)
    assert summary.ran == 24 and summary.counts["done"] == 24
    with open_storage(db) as store:
        frame = store.trials_frame(summary.study_id)
    assert sorted(frame["ordinal"]) == list(range(24)) and (frame["attempts"] == 1).all()
    assert frame["worker"].nunique() == 2  # both processes took trials
    # the same configuration and repetition on the same seed measures the same in any process
    serial = run_profile(ProfileOptions(**{**opts.__dict__, "workers": 1, "db": f"sqlite:///{tmp_path / 's.db'}"}))
    with open_storage(serial.db.replace("***", "")) as store:
        serial_frame = store.trials_frame(serial.study_id)
    assert list(serial_frame["objective"]) == list(frame["objective"])


def test_in_run_on_the_simulated_machine(tmp_path):
    db = f"sqlite:///{tmp_path / 'p.db'}"
    s = run_profile(ProfileOptions(backend="autonuma", workload="gups", platform="sim", strategy="lhs",
                                   budget=8, interval=2, db=db, in_run=True, show_progress=False))
    assert s.counts["done"] == 8
    with open_storage(db) as store:
        samples = store.samples_frame(study=s.study_id)
    # one continuous run: sample times increase across trials
    assert list(samples["t_s"]) == sorted(samples["t_s"]) and samples["t_s"].iloc[-1] == 16


def test_unknown_inputs_are_clear_errors(tmp_path):
    db = f"sqlite:///{tmp_path / 'p.db'}"
    res = CliRunner().invoke(app, ["profile", "--backend", "nope", "--workload", "gups", "--platform", "sim",
                                   "--db", db])
    assert res.exit_code == 1 and "unknown backend 'nope'" in res.stderr
    res = CliRunner().invoke(app, ["profile", "--backend", "tpp", "--workload", "gups", "--platform", "sim",
                                   "--db", db, "--strategy", "halton"])
    assert res.exit_code == 1 and "--strategy must be one of grid, random, sobol, lhs" in res.stderr
    res = CliRunner().invoke(app, ["profile", "--backend", "tpp", "--workload", "gups", "--platform", "sim",
                                   "--db", db, "--worker"])
    assert res.exit_code == 1 and "no such study to join" in res.stderr


def test_a_shared_study_measures_what_the_other_workloads_found_best(tmp_path):
    """--strategy shared: the defaults, then each other workload's best configuration that beat its
    defaults, round by round; planned once, so a resumed study keeps its plan."""
    import re

    from ptmt.catalog import load_catalog
    from ptmt.db.canonical import config_hash, normalize
    from ptmt.offline.analyze import load_trials

    db = f"sqlite:///{tmp_path / 'shared.db'}"
    common = ["--backend", "upm", "--platform", "sim", "--duration", "3", "--interval", "1", "--db", db, "--json"]
    res = CliRunner().invoke(app, ["profile", "--workload", "btree", "--strategy", "shared", *common])
    assert res.exit_code == 1
    assert re.search(r"the database holds no finished trial of backend upm \(catalog \w+\) for a workload other "
                     r"than 'btree': profile other workloads first", res.stderr), res.stderr
    with open_storage(db) as store:
        assert store.studies_frame().empty  # nothing planned, no study left behind
    for w in ("gups", "npb-cg"):
        res = CliRunner().invoke(app, ["profile", "--workload", w, "--budget", "8", *common])
        assert res.exit_code == 0, res.output
    with open_storage(db) as store:
        found = load_trials(store, "upm")
    ranked = []
    for w in ("gups", "npb-cg"):  # what each workload's own sweep found better than its defaults, best first
        own = found[found["workload"] == w].groupby("config_hash")["perf"].mean()
        default = own[config_hash(normalize(load_catalog("upm").defaults()))]
        ranked.append(list(own[own > default].sort_values(ascending=False).index))
    assert all(ranked)  # both found something to share
    res = CliRunner().invoke(app, ["profile", "--workload", "btree", "--strategy", "shared", "--budget", "4",
                                   *common])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    with open_storage(db) as store:
        plan = list(store.trials_frame(summary["study"])["config_hash"])
    expected = [ranked[0][0], ranked[1][0], *(h for pair in zip(ranked[0][1:], ranked[1][1:], strict=False)
                                              for h in pair)]
    expected = list(dict.fromkeys(expected))  # a configuration both found is measured once
    assert plan[0] == config_hash(normalize(load_catalog("upm").defaults()))
    assert plan[1:] == expected[:3]  # gups's best, then npb-cg's (by name), then the second round
    again = CliRunner().invoke(app, ["profile", "--workload", "btree", "--strategy", "shared", "--budget", "4",
                                     *common])
    assert json.loads(again.stdout)["ran"] == 0
