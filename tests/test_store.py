"""The results store: stable keys, atomic records, concurrent writers lose nothing."""

import json
import multiprocessing as mp

from records.store import SCHEMA_VERSION, ResultsStore, code_versions, run_key

SETTINGS = {"model": "tiny", "compressor": {"name": "scc", "tau": None}, "retention": 0.35,
            "task": "synthetic_video_qa", "frames": 32, "seed": 0}
# the least a readable record holds (records.schema): who ran what, and its metrics
BODY = {"source": "ours", "status": "finished",
        "settings": {"model": {"name": "tiny"}, "compressor": {"name": "scc", "params": {}}},
        "metrics": {"acc,none": {"value": 0.5, "stderr": None}}}


def test_key_is_stable_and_sensitive():
    versions = {"torch": "2.14.1", "git_commit": "abc"}
    assert run_key(SETTINGS, versions) == run_key(dict(reversed(SETTINGS.items())), versions)
    assert run_key(SETTINGS, versions) != run_key({**SETTINGS, "retention": 0.5}, versions)
    assert run_key(SETTINGS, versions) != run_key(SETTINGS, {**versions, "torch": "2.15"})


def test_code_versions_name_the_packages_and_commit():
    versions = code_versions()
    assert {"lmms-eval", "transformers", "torch", "git_commit"} <= set(versions)
    assert versions["lmms-eval"] == "0.7.3"


def test_write_read_round_trip_and_schema(tmp_path):
    store = ResultsStore(tmp_path / "runs")
    assert not store.has("k1")
    path = store.write("k1", BODY)
    assert path == tmp_path / "runs" / "k1.json" and store.has("k1")
    record = store.read("k1")
    assert record["schema_version"] == SCHEMA_VERSION and record["key"] == "k1"
    assert [r["key"] for r in store.records()] == ["k1"]
    assert not list((tmp_path / "runs").glob("*.tmp"))


def test_corrupt_or_foreign_files_are_not_records(tmp_path):
    store = ResultsStore(tmp_path)
    (tmp_path / "bad.json").write_text('{"schema_version": 1, "key": "ba')
    (tmp_path / "old.json").write_text(json.dumps({"schema_version": 0}))
    store.write("good", BODY)
    assert not store.has("bad") and not store.has("old")
    assert [r["key"] for r in store.records()] == ["good"]


def _writer(root: str, worker: int, count: int) -> None:
    store = ResultsStore(root)
    for i in range(count):
        store.write(f"w{worker}-{i}", {**BODY, "worker": worker, "payload": "x" * 5000})
        store.write("shared", {**BODY, "worker": worker, "i": i, "payload": "y" * 5000})


def test_two_workers_writing_at_once_lose_nothing(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 40)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store = ResultsStore(tmp_path)
    keys = {r["key"] for r in store.records()}
    assert keys == {f"w{w}-{i}" for w in range(2) for i in range(40)} | {"shared"}
    assert store.read("shared")["i"] == 39  # whole record from one writer, never a mix
    assert not list(tmp_path.glob(".*.tmp"))
