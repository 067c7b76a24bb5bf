"""Merging results folders from several machines: a key kept once, conflicts reported and
never overwritten, the target's bytes untouched where it already had the run."""

from __future__ import annotations

import json

from records.store import ResultsStore, merge
from scissorbench.cli import main

BODY = {"source": "ours", "status": "finished",
        "settings": {"model": {"name": "tiny"}, "compressor": {"name": "scc", "params": {}}},
        "metrics": {"acc,none": {"value": 0.5, "stderr": None}}}


def _other(value: float) -> dict:
    return {**BODY, "metrics": {"acc,none": {"value": value, "stderr": None}}}


def _stores(tmp_path):
    """Machine a: k1, k2; machine b: k2 (equal), k3 (new), k4 (conflicts with the target's)."""
    a, b, target = (ResultsStore(tmp_path / n) for n in ("a", "b", "target"))
    a.write("k1", BODY)
    a.write("k2", _other(0.7))
    b.write("k2", _other(0.7))
    b.write("k3", _other(0.1))
    b.write("k4", _other(0.9))
    target.write("k4", _other(0.2))
    return a, b, target


def test_merge_keeps_each_key_once_and_reports_conflicts(tmp_path):
    a, b, target = _stores(tmp_path)
    before = target.path("k4").read_bytes()
    done = merge([a.root, b.root], target.root)
    assert sorted(done.copied) == ["k1", "k2", "k3"] and done.same == ["k2"]
    assert [(key, fields) for key, _, _, fields in done.conflicts] == [("k4", ["metrics"])]
    assert "k4" in done.describe()[0] and str(target.path("k4")) in done.describe()[0]
    assert target.path("k4").read_bytes() == before  # never overwritten
    assert sorted(r["key"] for r in target.records()) == ["k1", "k2", "k3", "k4"]
    for key, source in (("k1", a), ("k3", b)):  # copied as they were
        assert target.read(key) == source.read(key)
    again = merge([a.root, b.root], target.root)  # idempotent
    assert again.copied == [] and sorted(again.same) == ["k1", "k2", "k2", "k3"]


def test_cli_exits_1_on_a_conflict_and_names_it(tmp_path, capsys):
    a, b, target = _stores(tmp_path)
    assert main(["merge", str(a.root), str(b.root), "--into", str(target.root)]) == 1
    captured = capsys.readouterr()
    assert "3 copied" in captured.out and "conflict k4" in captured.err
    assert json.loads(target.path("k4").read_text())["metrics"]["acc,none"]["value"] == 0.2
    assert main(["merge", str(a.root), "--into", str(tmp_path / "clean")]) == 0
    assert main(["merge", str(tmp_path / "nope"), "--into", str(target.root)]) == 2


def test_the_same_run_timed_differently_on_two_machines_is_kept_once(tmp_path):
    """Two machines computing one run agree on every number but when it ran and how fast:
    kept once (the target's timings stay); a different score beside it is still a conflict."""
    a, target = ResultsStore(tmp_path / "a"), ResultsStore(tmp_path / "target")
    timed = {**BODY, "started_at": "2026-12-01T10:00:00Z", "duration_s": 12.0,
             "timings": {"prefill_s": 0.3}, "peak_memory_bytes": 1000}
    target.write("k", timed)
    a.write("k", {**BODY, "started_at": "2026-12-01T11:00:00Z", "duration_s": 9.5,
                  "timings": {"prefill_s": 0.2}, "peak_memory_bytes": 900})
    a.write("j", {**_other(0.4), "duration_s": 1.0})
    target.write("j", {**_other(0.6), "duration_s": 2.0})
    done = merge([a.root], target.root)
    assert done.same == ["k"] and target.read("k")["duration_s"] == 12.0
    assert [(key, fields) for key, _, _, fields in done.conflicts] == [("j", ["metrics"])]
