"""The simulator: no fuse is ever overloaded, with noisy and late meters, late
acknowledgements and stations going offline; and the safeguards are what makes it so."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from loadmgmt.engine.__main__ import main
from loadmgmt.engine.scenarios import SCENARIOS, office_tree, rush_hour, seed_32a
from loadmgmt.engine.simulate import Result, run

_CACHE: dict[str, Result] = {}


def _run(name: str) -> Result:
    if name not in _CACHE:
        _CACHE[name] = run(SCENARIOS[name]())
    return _CACHE[name]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_no_node_is_ever_overloaded(name: str) -> None:
    m = _run(name).metrics
    assert m.overload_as and all(v == 0.0 for v in m.overload_as.values()), m.overload_as
    assert m.energy_kwh > 0
    assert 0.0 < m.jain <= 1.0
    assert m.engine_calls > 10


def test_the_seed_example_uses_the_supply_fully_and_switches_little() -> None:
    m = _run("seed-32a").metrics
    assert m.utilisation > 0.95
    assert m.sessions == 20
    assert m.phase_switches_max <= 2


def test_the_office_tree_exercises_offline_stations_shedding_and_meter_outage() -> None:
    sc = office_tree()
    assert any(s.offline for s in sc.stations)
    assert sc.sheds and sc.meter_outages
    m = _run("office-tree").metrics
    assert m.utilisation > 0.8
    assert m.phase_switches_max <= 4  # the cap per session


def test_runs_are_deterministic() -> None:
    a = run(seed_32a())
    assert a.metrics == _run("seed-32a").metrics


@pytest.mark.parametrize("make", [office_tree, rush_hour])
def test_without_the_margin_noisy_late_meters_overload_the_house(make: object) -> None:
    sc = make()  # type: ignore[operator]
    bare = replace(sc, nodes=tuple(replace(n, margin=0.0) for n in sc.nodes))
    assert max(run(bare).metrics.overload_as.values()) > 0


@pytest.mark.parametrize("make", [office_tree, rush_hour])
def test_without_decreases_first_late_acknowledgements_overload_a_fuse(make: object) -> None:
    sc = make()  # type: ignore[operator]
    assert max(run(replace(sc, ordered_transitions=False)).metrics.overload_as.values()) > 0


def test_the_command_prints_metrics_and_writes_a_png(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "plot.png"
    assert main(["simulate", "seed-32a", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    assert "overload ampere-seconds (worst node)       0.0" in text
    assert main(["list"]) == 0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_other_random_days_at_the_office_are_safe_too(seed: int) -> None:
    m = run(office_tree(seed)).metrics
    assert all(v == 0.0 for v in m.overload_as.values()), m.overload_as
    assert m.utilisation > 0.8
