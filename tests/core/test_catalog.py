"""Catalogs: every shipped one is valid; broken ones fail with the file and key named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ptmt.catalog import builtin_catalog_dir, load_all, load_catalog, load_catalog_file
from ptmt.errors import ConfigError, ValidationError

SHIPPED = ["autonuma", "colloid", "memtis", "tiering08", "tpp", "upm"]


def test_every_backend_named_by_the_design_ships_a_valid_catalog():
    catalogs = load_all()
    assert set(SHIPPED) <= set(catalogs)
    for c in catalogs.values():
        assert c.knobs, c.name
        for k in c.knobs.values():
            assert k.candidates, f"{c.name}.{k.name} has no candidates"
            assert k.check(k.default) is None
            assert k.description and k.category


def test_activation_settings_are_separate_from_tunables():
    tpp, colloid = load_catalog("tpp"), load_catalog("colloid")
    assert tpp.activation["numa_balancing"].activation_value == 2
    assert tpp.activation["demotion_enabled"].activation_value is True
    assert colloid.activation["numa_balancing"].activation_value == 6
    assert "numa_balancing" not in tpp.knobs


def test_inheritance_adds_and_keeps_knobs_and_rules():
    autonuma, tpp = load_catalog("autonuma"), load_catalog("tpp")
    assert set(tpp.knobs) == set(autonuma.knobs) | {"demote_scale_factor"}
    assert [str(r) for r in tpp.rules] == ["scan_period_min_ms <= scan_period_max_ms"]
    assert tpp.hash != autonuma.hash


def test_design_defaults_are_recorded():
    k = load_catalog("autonuma").knobs
    assert (k["numa_balancing_promote_rate_limit_MBps"].default, k["hot_threshold_ms"].default,
            k["scan_size_mb"].default, k["scan_period_max_ms"].default, k["watermark_scale_factor"].default) \
        == (65536, 1000, 256, 60000, 10)
    assert load_catalog("tpp").knobs["demote_scale_factor"].requires.patch == "TPP"


def write_catalog(d: Path, name: str, doc: dict) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def tpp_with(**scan_size) -> dict:
    doc = yaml.safe_load((builtin_catalog_dir() / "tpp.yaml").read_text())
    doc["knobs"]["scan_size_mb"] = {"path": "/sys/kernel/debug/sched/numa_balancing/scan_size_mb", "type": "int",
                                    "default": 64, "candidates": [64], "category": "profiling",
                                    "requires": {"debugfs": True}, "description": "x", **scan_size}
    return doc


def test_max_below_min_names_file_and_key(tmp_path):
    path = write_catalog(tmp_path / "configs" / "backends", "tpp", tpp_with(min=64, max=10))
    with pytest.raises(ConfigError) as e:
        load_catalog_file(path)
    assert str(e.value) == f"{path}: At 'knobs.scan_size_mb.max': must be >= min (got 10 < 64)"


@pytest.mark.parametrize("change, message", [
    ({"default": 5000, "min": 1, "max": 4096}, "At 'knobs.scan_size_mb.default': must be <= 4096 (got 5000)"),
    ({"candidates": [64, 0], "min": 1}, "At 'knobs.scan_size_mb.candidates[1]': must be >= 1 (got 0)"),
    ({"candidates": [64, 64]}, "At 'knobs.scan_size_mb.candidates': must not repeat a value"),
    ({"type": "float"}, "At 'knobs.scan_size_mb.type': must be one of int, bool, enum, bitmask (got 'float')"),
    ({"path": "/etc/shadow"}, "At 'knobs.scan_size_mb.path': must be under /proc/sys, /sys/kernel, "
                              "/sys/devices/system/node, /sys/devices/virtual/memory_tiering (got /etc/shadow)"),
    ({"requires": {}}, "At 'knobs.scan_size_mb.requires.debugfs': must be true for a knob under /sys/kernel/debug"),
    ({"bits": [1]}, "At 'knobs.scan_size_mb.bits': only applies to bitmask knobs (this one is int)"),
])
def test_semantic_errors_are_exact(tmp_path, change, message):
    path = write_catalog(tmp_path, "tpp", tpp_with(**change))
    with pytest.raises(ConfigError) as e:
        load_catalog_file(path)
    assert f"{path}: {message}" in str(e.value).splitlines()


def test_unknown_key_lists_allowed_ones(tmp_path):
    doc = tpp_with()
    doc["knobs"]["scan_size_mb"]["maximum"] = 3
    path = write_catalog(tmp_path, "tpp", doc)
    with pytest.raises(ConfigError) as e:
        load_catalog_file(path)
    assert "At 'knobs.scan_size_mb': " in str(e.value) and "'maximum'" in str(e.value)


def test_rule_naming_unknown_knob_and_missing_parent(tmp_path):
    doc = {"backend": "mine", "title": "t", "description": "d", "extends": "nosuch"}
    path = write_catalog(tmp_path, "mine", doc)
    with pytest.raises(ConfigError, match=r"At 'extends': unknown backend 'nosuch'"):
        load_catalog_file(path)
    doc = {"backend": "mine", "title": "t", "description": "d", "extends": "autonuma",
           "rules": ["scan_size_mb <= nope"]}
    path = write_catalog(tmp_path, "mine", doc)
    with pytest.raises(ConfigError) as e:
        load_catalog_file(path)
    assert str(e.value) == f"{path}: At 'rules[1]': names unknown knob 'nope'"


def test_backend_name_must_match_file(tmp_path):
    path = write_catalog(tmp_path, "tpp", {**tpp_with(), "backend": "tp"})
    with pytest.raises(ConfigError) as e:
        load_catalog(path.stem, [tmp_path])
    assert str(e.value) == f"{path}: At 'backend': must match the file name 'tpp' (got 'tp')"


def test_yaml_syntax_error_names_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("backend: bad\nknobs: [\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line 3: invalid YAML"):
        load_catalog("bad", [tmp_path])


def test_user_catalog_adds_a_patched_kernels_knob_without_code(tmp_path, monkeypatch):
    write_catalog(tmp_path, "mykernel", {
        "backend": "mykernel", "title": "AutoNUMA + my patch", "description": "d", "extends": "autonuma",
        "drop_knobs": ["scan_delay_ms"],
        "knobs": {"promo_batch": {"path": "/proc/sys/vm/promo_batch", "type": "int", "min": 1, "max": 64,
                                  "default": 8, "candidates": [4, 8, 16], "category": "migration",
                                  "description": "pages per promotion batch"}}})
    monkeypatch.setenv("PTMT_CATALOG_PATH", str(tmp_path))
    c = load_catalog("mykernel")
    assert "promo_batch" in c.knobs and "scan_delay_ms" not in c.knobs and "hot_threshold_ms" in c.knobs


def test_knob_coercion_messages():
    k = load_catalog("autonuma")
    with pytest.raises(ValidationError, match=r"^scan_size_mb: must be an integer \(got 'big'\)$"):
        k.knob("scan_size_mb").coerce("big")
    assert k.knob("demotion_enabled").coerce("yes") is True
    with pytest.raises(ValidationError, match=r"numa_balancing: must be a combination \(OR\) of bits 1, 2 \(got 6\)"):
        k.knob("numa_balancing").coerce("6")
    assert load_catalog("colloid").knob("numa_balancing").coerce("6") == 6
