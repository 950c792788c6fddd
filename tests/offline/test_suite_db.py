"""The suite database and its leave-one-workload-out models: the basis of the tuner's generalisation claims."""

from __future__ import annotations

from pathlib import Path

import pytest

from ptmt.offline.model import ModelError
from ptmt.offline.suite_db import build_suite_database, leave_one_out, suite_database_name, suite_table

WORKLOADS = ["gups", "stream", "btree"]


@pytest.fixture(scope="module")
def suite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("suite") / "suite.db"
    return build_suite_database("tpp", f"sqlite:///{path}", WORKLOADS, budget=3, duration=30, interval=10,
                                workers=2)


def test_every_workload_gets_its_own_study_and_a_resumed_build_adds_nothing(suite_url: str) -> None:
    table = suite_table(suite_url, "tpp")
    counts = table.groupby("workload").size().to_dict()
    assert set(counts) == set(WORKLOADS)
    assert all(n >= 3 for n in counts.values())  # the Sobol configurations (plus the default)
    build_suite_database("tpp", suite_url, WORKLOADS, budget=3, duration=30, interval=10, workers=1)
    assert len(suite_table(suite_url, "tpp")) == len(table)


def test_leave_one_out_never_sees_the_held_out_workload(suite_url: str) -> None:
    table = suite_table(suite_url, "tpp")
    model = leave_one_out(table, "tpp", "gups")
    assert model.meta["left_out"] == "gups"
    assert model.meta["n_trials"] == int((table["workload"] != "gups").sum())
    assert model.meta["n_trials"] < len(table)


def test_leave_one_out_refuses_a_workload_the_table_lacks(suite_url: str) -> None:
    table = suite_table(suite_url, "tpp")
    with pytest.raises(ModelError, match=r"workload 'npb-cg' is not in the table \(has: btree, gups, stream\)"):
        leave_one_out(table, "tpp", "npb-cg")
    with pytest.raises(ModelError, match="leaves no trial"):
        leave_one_out(table[table["workload"] == "gups"], "tpp", "gups")


def test_a_screened_suite_adds_one_knob_at_a_time_studies(tmp_path: Path) -> None:
    from ptmt.catalog import load_catalog

    # a screened database is cached under its own name, never mistaken for a plain one
    from ptmt.sim.digest import simulator_digest

    sim = simulator_digest()
    assert suite_database_name("upm", 3, 20.0, screen=True) == f"upm-3s-20-{sim}.db"
    assert suite_database_name("upm", 3, 20.0) == f"upm-3-20-{sim}.db"
    assert suite_database_name("upm", 48, 20.0, strategy="tpe") == f"upm-tpe48-20-{sim}.db"
    url = build_suite_database("upm", f"sqlite:///{tmp_path / 'screen.db'}", ["gups"], budget=3, duration=20,
                               interval=10, workers=1, screen=True)
    table = suite_table(url, "upm")
    defaults = load_catalog("upm").defaults()
    knobs = [c for c in table.columns if c.startswith("knob.")]
    moved = table[knobs].apply(lambda r: sum(r[k] != defaults[k.removeprefix("knob.")] for k in knobs), axis=1)
    # the 3 Sobol points (the defaults among them), then the defaults and upm's 12 single-knob points
    assert len(table) == 3 + 1 + 12
    assert int((moved == 1).sum()) >= 12 and int((moved == 0).sum()) == 2


def test_another_sweep_seed_is_another_database(tmp_path: Path) -> None:
    """The suite sweep's seed drives its sampler and its runs; a database of another seed is cached
    under its own name, so that a change's effect can be told from one sweep's luck."""
    from ptmt.sim.digest import simulator_digest

    assert suite_database_name("tpp", 48, 180.0, strategy="tpe", share=13, seed=1) == \
        f"tpp-tpe48+shared13-180-seed1-{simulator_digest()}.db"
    assert suite_database_name("tpp", 48, 180.0, strategy="tpe", seed=0) == f"tpp-tpe48-180-{simulator_digest()}.db"
    tables = {seed: suite_table(build_suite_database("upm", f"sqlite:///{tmp_path / f'seed{seed}.db'}", ["gups"],
                                                     budget=4, duration=20, interval=10, workers=1, seed=seed), "upm")
              for seed in (0, 1)}
    knobs = sorted(c for c in tables[0].columns if c.startswith("knob."))
    drawn = {seed: {tuple(row) for row in t[knobs].astype(str).itertuples(index=False)} for seed, t in tables.items()}
    assert len(tables[0]) == len(tables[1]) == 4 and drawn[0] != drawn[1]


def test_shared_trials_of_what_only_the_left_out_workload_found_leave_with_it(tmp_path: Path) -> None:
    """A shared study measures each workload's best configurations on the others; leaving a workload
    out must also leave out the shared trials of configurations only its own sweep had found."""
    from ptmt.offline.shared import found_by
    from ptmt.sim.digest import simulator_digest

    assert suite_database_name("tpp", 48, 180.0, strategy="tpe", share=13) == \
        f"tpp-tpe48+shared13-180-{simulator_digest()}.db"
    url = build_suite_database("tpp", f"sqlite:///{tmp_path / 'shared.db'}", WORKLOADS, budget=10, duration=30,
                               interval=10, workers=1, strategy="tpe", share=4)
    table = suite_table(url, "tpp")
    shared = table[table["strategy"] == "shared"]
    assert set(shared["workload"]) == set(WORKLOADS)
    finders = found_by(table)
    assert all(finders[h] for h in shared["config_hash"])  # every shared configuration was some sweep's
    dropped_somewhere = False
    for w in WORKLOADS:
        rest = table[table["workload"] != w]
        leaked = (rest["strategy"] == "shared") & rest["config_hash"].map(lambda h, w=w: finders[h] == {w})
        dropped_somewhere |= bool(leaked.any())
        assert leave_one_out(table, "tpp", w).meta["n_trials"] == len(rest) - int(leaked.sum())
    assert dropped_somewhere  # the rule had something to do: a tpe round found a configuration of its own
