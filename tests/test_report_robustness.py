"""The store and the reporting layer survive any file (issue 13, item 7).

A malformed file is skipped with one warning naming it and why (the store's `records`, `read`,
`has`; `load_records`; `scissorbench report`, which still writes its tables); two files of one
key give one record, never their mean; an inf/nan metric is a missing cell, never "inf".
"""

import json
import logging
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
from reporting_fixtures import n_records, record, write_sweep

import records.store as store_module
from records.store import ResultsStore
from reporting import align, load_records
from reporting.tables import benchmark_table, write_table
from scissorbench.cli import main

MODEL = "llava_scissor_baseline_7b"


def _full(method: str = "scc", retention: float = 0.2, value: float = 70.0) -> dict:
    """A complete record of a run the fixture sweep does not have (MVBench, seed 0)."""
    key, body = record(method, retention, 0, "mvbench", value)
    return {"schema_version": 1, "key": key, **body}


def _without(name: str):
    return lambda r: json.dumps({k: v for k, v in r.items() if k != name}).encode()


def _with(**fields):
    return lambda r: json.dumps({**r, **fields}).encode()


# kind -> (the file's bytes from a complete record, what the warning says)
KINDS = {
    "json_array": (lambda r: json.dumps([r]).encode(), "not a JSON object"),
    "missing_key": (_without("key"), "no `key`"),
    "metrics_a_list": (_with(metrics=[{"value": 60.0}]), "`metrics` is an array"),
    "retention_a_string": (_with(retention="35%"), "`retention` is a string"),
    "settings_missing": (_without("settings"), "no `settings`"),
    "non_utf8": (lambda r: json.dumps(r).encode().replace(b'"ours"', b'"ours\xff"'),
                 "not UTF-8"),
    "truncated": (lambda r: json.dumps(r).encode()[:200], "not JSON"),
}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    return write_sweep(tmp_path_factory.mktemp("sweep") / "runs")


@pytest.fixture
def runs(sweep, tmp_path) -> Path:
    """A fresh copy of the fixture sweep, to add bad files to."""
    return Path(shutil.copytree(sweep, tmp_path / "runs"))


def _warnings(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and text in r.getMessage()]


def _bad_file(folder: Path, kind: str, name: str | None = None) -> Path:
    make, _ = KINDS[kind]
    path = folder / (name or f"{kind}.json")
    path.write_bytes(make(_full()))
    return path


# --- load_records -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(KINDS))
def test_load_records_skips_a_malformed_file_with_one_warning(kind, runs, caplog):
    bad = _bad_file(runs, kind)
    caplog.set_level(logging.WARNING, logger="scissorbench")
    records = load_records(runs)
    assert records["key"].nunique() == n_records()  # the sweep, without the bad file
    assert _full()["key"] not in set(records["key"])
    (message,) = _warnings(caplog, str(bad))
    assert KINDS[kind][1] in message


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_nonfinite_metric_is_missing_with_a_warning(value, runs, caplog, tmp_path):
    full = _full("fastv", 0.2, value)
    ResultsStore(runs).write(full["key"], full)  # Python's json writes Infinity / NaN
    caplog.set_level(logging.WARNING, logger="scissorbench")
    records = load_records(runs)
    row = records[records["key"] == full["key"]].iloc[0]
    assert pd.isna(row["value"]) and row["status"] == "finished"
    (message,) = _warnings(caplog, full["key"])
    assert "mvbench_accuracy,none" in message
    table = benchmark_table(align(records), "MVBench", MODEL)
    md, csv, _ = write_table(table, tmp_path / "t" / "MVBench")
    assert "inf" not in md.read_text().lower() and "inf" not in csv.read_text().lower()
    assert "fastv" not in table.index or pd.isna(table.loc["fastv"].get("20%"))


def _duplicate(folder: Path, value: float, name: str | None = None,
               finished_at: str = "2026-11-23T20:10:00Z") -> dict:
    full = {**_full("scc", 0.2, value), "finished_at": finished_at}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / (name or f"{full['key']}.json")).write_text(json.dumps(full))
    return full


def _cell(records: pd.DataFrame) -> float:
    return benchmark_table(align(records), "MVBench", MODEL).loc["scc", "20%"]


def test_a_copy_of_a_record_is_reported_and_never_averaged(runs, caplog):
    kept = _duplicate(runs, 95.0)
    _duplicate(runs, 5.0, name=f"{kept['key']} (1).json", finished_at="2026-11-24T00:00:00Z")
    caplog.set_level(logging.WARNING, logger="scissorbench")
    records = load_records(runs)
    assert _cell(records) == 95.0  # the file named <key>.json, not the mean 50
    (message,) = _warnings(caplog, kept["key"])
    assert f"{kept['key']} (1).json" in message and f"kept {runs / kept['key']}.json" in message
    assert [r["metrics"] for r in ResultsStore(runs).records() if r["key"] == kept["key"]] == [
        kept["metrics"]]


def test_one_key_in_two_folders_keeps_the_latest(tmp_path, caplog):
    old = _duplicate(tmp_path / "a", 95.0, finished_at="2026-11-23T20:10:00Z")
    _duplicate(tmp_path / "b", 5.0, finished_at="2026-11-24T09:00:00Z")
    caplog.set_level(logging.WARNING, logger="scissorbench")
    records = load_records(tmp_path / "a", tmp_path / "b")
    assert len(records) == 1 and _cell(records) == 5.0  # the later run, not 50
    (message,) = _warnings(caplog, old["key"])
    assert f"kept {tmp_path / 'b'}" in message


# --- scissorbench report --------------------------------------------------------------------------

def test_report_command_survives_every_malformed_file(runs, tmp_path, capsys, caplog):
    bad = [_bad_file(runs, kind) for kind in sorted(KINDS)]
    caplog.set_level(logging.WARNING, logger="scissorbench")
    out = tmp_path / "report"
    assert main(["report", f"results_dir={runs}", f"output_dir={out}"]) == 0
    assert (out / "tables" / MODEL / "MVBench.md").is_file()
    stdout = capsys.readouterr().out
    assert (f"read {n_records() + len(bad)} files: {n_records()} records, {len(bad)} skipped"
            in stdout)
    page = (out / "report.html").read_text()
    for path in bad:
        assert len(_warnings(caplog, str(path))) == 1 and path.name in page


def test_report_command_shows_one_copy_and_no_inf(runs, tmp_path, capsys):
    kept = _duplicate(runs, 95.0)
    _duplicate(runs, 5.0, name=f"{kept['key']} (1).json")
    inf = _full("fastv", 0.2, math.inf)
    ResultsStore(runs).write(inf["key"], inf)
    out = tmp_path / "report"
    assert main(["report", f"results_dir={runs}", f"output_dir={out}"]) == 0
    table = pd.read_csv(out / "tables" / MODEL / "MVBench.csv").set_index("method")
    assert table.loc["scc", "20%"] == 95.0 and pd.isna(table.loc["fastv", "20%"])
    md = (out / "tables" / MODEL / "MVBench.md").read_text()
    assert "inf" not in md.lower() and "50.00" not in md
    stdout = capsys.readouterr().out
    assert "1 duplicate" in stdout and "1 inf/nan" in stdout


# --- the store ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(KINDS))
def test_store_treats_a_malformed_file_at_a_key_as_absent(kind, tmp_path, caplog):
    store = ResultsStore(tmp_path)
    key = _full()["key"]
    bad = _bad_file(tmp_path, kind, name=f"{key}.json")
    caplog.set_level(logging.WARNING, logger="scissorbench")
    assert not store.has(key)  # the run is recomputed, and the log says so
    (message,) = _warnings(caplog, str(bad))
    assert KINDS[kind][1] in message and "recomputed" in message
    with pytest.raises(store_module.MalformedRecord, match=KINDS[kind][1].replace("`", ".")):
        store.read(key)
    assert list(store.records()) == []
    store.write(key, {k: v for k, v in _full().items() if k not in ("schema_version", "key")})
    assert store.has(key) and store.read(key)["key"] == key


def test_store_record_under_another_key_is_not_that_run(tmp_path, caplog):
    store = ResultsStore(tmp_path)
    full = _full()
    (tmp_path / "0000000000000000.json").write_text(json.dumps(full))
    caplog.set_level(logging.WARNING, logger="scissorbench")
    assert not store.has("0000000000000000")
    assert _warnings(caplog, "its key is")
    assert [r["key"] for r in store.records()] == [full["key"]]
