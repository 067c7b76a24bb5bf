"""Hydra launchers beyond the basic one, on this machine: a real 3-job `scissorbench run -m`
sweep of the micro model through Hydra's Ray launcher on a private local Ray of 2 CPUs
(configs/hydra/launcher/ray_local.yaml) and through submitit's local executor
(configs/hydra/launcher/local_gpus.yaml, `gpus` unset). Each job runs in a process of its own,
neither the test's nor the sweep's, and writes its record once; a rerun computes nothing.

Every sweep is a subprocess in a session of its own with a time limit: past it, or when it
leaves processes behind (a Ray that did not shut down), the whole process group is killed and
the test fails, so a hung Ray never hangs the suite. Ray sends no usage report, starts no
dashboard, serves on 127.0.0.1 alone (its single-node mode), keeps its files under pytest's
tmp dir and writes no auth token to ~/.ray (the environment of ray_local.yaml's comment)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from records.store import ResultsStore

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ["-m", "model=micro", "compressor=scc,uniform,random", "retention=0.5", "limit=2"]
TIMEOUT_S = 300  # one sweep; ~30-60 s on 2 busy cores
RAY_TEMP_MAX = 44  # + session_<date>_<pid>/sockets/plasma_store: AF_UNIX's 107 bytes
GRACE_S = 30  # for the sweep's children (Ray's servers and workers) to exit after it
FINISHED = "finished synthetic_video_qa -> {path}"  # runners/evaluate.py, one per computed run
SKIPPED = "skip synthetic_video_qa ({key}): finished record"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A data root holding the first 2 held-out synthetic questions (the sweeps' limit=2)."""
    from synthetic.task import build_dataset

    root = tmp_path_factory.mktemp("launcher_data")
    build_dataset(root / "synthetic_video_qa", n=2, seed=0, split="test")
    return root


def _env(data: Path) -> dict[str, str]:
    return {**os.environ, "SCISSORBENCH_DATA": str(data), "OMP_NUM_THREADS": "1",
            "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "RAY_DEDUP_LOGS": "0",
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONUNBUFFERED": "1"}


def _group(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group `pgid`."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            alive.append(int(stat.parent.name))
    return alive


def _kill(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def scissorbench_run(args: list[str], data: Path, log: Path) -> tuple[int, str, int]:
    """(exit code, output, pid) of `scissorbench run ARGS` as its own process group; killed
    with everything it started when it outlives TIMEOUT_S or leaves processes behind."""
    cmd = [sys.executable, "-m", "scissorbench.cli", "run", *args]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(data), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _kill(proc.pid)
            proc.wait()
            pytest.fail(f"scissorbench run did not finish in {TIMEOUT_S} s, killed; see {log}")
    deadline = time.monotonic() + GRACE_S
    while _group(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = _group(proc.pid)
    _kill(proc.pid)
    assert not left, f"processes {left} outlived the sweep by {GRACE_S} s (killed); see {log}"
    return code, log.read_text(), proc.pid


def _assert_three_records(out: str, results: Path) -> set[str]:
    """The sweep's three finished records, one file per key; their keys. The summary counts
    each run the sweep planned as finished only when the store holds its key's record, written
    by this sweep: the records are the planned ones."""
    assert "[run] 3 runs: 3 finished, 0 skipped" in out
    records = list(ResultsStore(results).records())
    keys = {r["key"] for r in records}
    assert len(records) == len(keys) == 3
    assert sorted(r["settings"]["compressor"]["name"] for r in records) == [
        "random", "scc", "uniform"]
    for r in records:
        assert r["status"] == "finished" and r["samples"]["count"] == 2
        assert (r["settings"]["model"]["name"], r["settings"]["retention"]) == ("micro", 0.5)
    assert sorted(p.stem for p in results.glob("*.json")) == sorted(keys)
    return keys


def _writers(logs: dict[int, str], results: Path, key: str) -> list[int]:
    """The processes (of `logs`: pid -> its output) that logged computing `key`'s record."""
    line = FINISHED.format(path=results / f"{key}.json")
    return [pid for pid, text in logs.items() for _ in range(text.count(line))]


@pytest.mark.filterwarnings("ignore:(?s).*validated against ConfigStore schema:UserWarning")
@pytest.mark.parametrize("launcher", ["ray", "ray_local", "local_gpus", "slurm"])
def test_every_launcher_config_composes(launcher):
    """configs/hydra/launcher/*.yaml give their plugin's launcher; Ray's ask for GPUs or not."""
    from hydra import compose, initialize_config_dir

    import runners.schema  # noqa: F401  registers the structured config `run_schema`

    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra/launcher={launcher}"],
                      return_hydra_config=True)
    node = cfg.hydra.launcher
    plugin = {"ray": "RayLauncher", "ray_local": "RayLauncher", "local_gpus": "LocalLauncher",
              "slurm": "SlurmLauncher"}[launcher]
    assert node._target_.rsplit(".", 1)[1] == plugin
    if launcher.startswith("ray"):
        assert node.ray.remote.num_gpus == (1 if launcher == "ray" else 0)
        assert node.ray.init.address is None
    if launcher == "ray":  # joinable: ray.init(address=auto) refuses an object store size
        assert "object_store_memory" in node.ray.init and node.ray.init.object_store_memory is None


# --- Ray: hydra/launcher=ray_local on a private Ray of 2 CPUs --------------------------------


@pytest.fixture(scope="module")
def ray_sweep(data, tmp_path_factory):
    """The sweep through the Ray launcher, then the same sweep again."""
    root = tmp_path_factory.mktemp("ray_sweep")
    temp = tmp_path_factory.mktemp("ray")  # Ray's socket paths below it must fit 107 bytes
    short = None
    if len(str(temp)) > RAY_TEMP_MAX:  # a long --basetemp: a short folder of our own
        temp = short = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    results = root / "runs"

    def sweep(name: str):
        args = [*SWEEP, "hydra/launcher=ray_local", "hydra.launcher.ray.init.num_cpus=2",
                f"+hydra.launcher.ray.init._temp_dir={temp}", f"results_dir={results}",
                f"hydra.sweep.dir={root / name}"]
        start = time.monotonic()
        code, out, pid = scissorbench_run(args, data, root / f"{name}.log")
        return code, out, pid, time.monotonic() - start

    first = sweep("first")
    stamps = {p: p.stat().st_mtime_ns for p in results.glob("*.json")}
    sessions = set(temp.glob("session_2*"))
    again = sweep("again")
    yield {"root": root, "results": results, "temp": temp, "first": first, "again": again,
           "stamps": stamps, "first_sessions": sessions}
    if short is not None:
        shutil.rmtree(short, ignore_errors=True)


def _ray_workers(sessions) -> dict[int, str]:
    """pid -> output of every Ray worker of the sessions (logs/worker-<id>-<job>-<pid>.out)."""
    logs = {}
    for session in sessions:
        for path in (session / "logs").glob("worker-*.out"):
            pid = int(path.stem.rsplit("-", 1)[1])
            logs[pid] = logs.get(pid, "") + path.read_text(errors="replace")
    return logs


def test_ray_launcher_runs_the_sweep_in_ray_workers(ray_sweep):
    code, out, driver, seconds = ray_sweep["first"]
    assert code == 0, out[-3000:]
    assert "Ray Launcher is launching 3 jobs" in out and "Started a local Ray instance" in out
    results = ray_sweep["results"]
    keys = _assert_three_records(out, results)
    (session,) = ray_sweep["first_sessions"]  # the Ray this sweep started, in pytest's tmp dir
    assert list((session / "logs").glob(f"python-core-driver-*_{driver}.log"))
    workers = _ray_workers([session])
    for key in keys:  # computed once each, by a Ray worker, neither the sweep nor the test
        (writer,) = _writers(workers, results, key)
        assert writer not in (driver, os.getpid())
    forwarded = {int(pid) for pid in re.findall(r"\(_run_job pid=(\d+)\)", out)}
    assert forwarded and driver not in forwarded  # the jobs' output, as Ray forwards it
    print(f"ray_local sweep: {seconds:.1f} s")


def test_ray_launcher_rerun_computes_nothing(ray_sweep):
    code, out, _driver, seconds = ray_sweep["again"]
    assert code == 0, out[-3000:]
    assert "[run] 3 runs: 0 finished, 3 skipped" in out
    results = ray_sweep["results"]
    assert {p: p.stat().st_mtime_ns for p in results.glob("*.json")} == ray_sweep["stamps"]
    new = set(ray_sweep["temp"].glob("session_2*")) - ray_sweep["first_sessions"]
    workers = _ray_workers(new)
    for path in ray_sweep["stamps"]:
        assert not _writers(workers, results, path.stem)
        assert sum(SKIPPED.format(key=path.stem) in text for text in workers.values()) == 1
    print(f"ray_local rerun: {seconds:.1f} s")


# --- submitit: hydra/launcher=local_gpus (submitit's local executor), gpus unset -------------


@pytest.fixture(scope="module")
def submitit_sweep(data, tmp_path_factory):
    """The sweep through submitit's local executor, then the same sweep again."""
    root = tmp_path_factory.mktemp("submitit_sweep")
    results = root / "runs"

    def sweep(name: str):
        args = [*SWEEP, "hydra/launcher=local_gpus", f"results_dir={results}",
                f"hydra.sweep.dir={root / name}"]
        start = time.monotonic()
        code, out, pid = scissorbench_run(args, data, root / f"{name}.log")
        return code, out, pid, time.monotonic() - start

    first = sweep("first")
    stamps = {p: p.stat().st_mtime_ns for p in results.glob("*.json")}
    return {"root": root, "results": results, "first": first, "again": sweep("again"),
            "stamps": stamps}


def _submitit_jobs(sweep_dir: Path) -> dict[int, str]:
    """job id -> output of each submitit job of a sweep (<sweep dir>/.submitit/<id>/, beside
    the executor's own `%j`); the local executor's job id is the job process's pid."""
    return {int(folder.name): (folder / f"{folder.name}_0_log.out").read_text(errors="replace")
            for folder in (sweep_dir / ".submitit").iterdir() if folder.name.isdigit()}


def test_submitit_local_executor_runs_each_job_in_its_own_process(submitit_sweep):
    code, out, driver, seconds = submitit_sweep["first"]
    assert code == 0, out[-3000:]
    assert "Submitit 'local' sweep output dir" in out
    results, sweep_dir = submitit_sweep["results"], submitit_sweep["root"] / "first"
    keys = _assert_three_records(out, results)
    jobs = _submitit_jobs(sweep_dir)
    assert len(jobs) == 3 and not {driver, os.getpid()} & set(jobs)
    assert all("Job completed successfully" in text for text in jobs.values())
    writers = [_writers(jobs, results, key) for key in keys]
    assert all(len(w) == 1 for w in writers)  # each record computed once
    assert len({w[0] for w in writers}) == 3  # by three processes
    print(f"submitit local sweep: {seconds:.1f} s")


def test_submitit_local_executor_rerun_computes_nothing(submitit_sweep):
    code, out, _driver, seconds = submitit_sweep["again"]
    assert code == 0, out[-3000:]
    assert "[run] 3 runs: 0 finished, 3 skipped" in out
    results = submitit_sweep["results"]
    assert {p: p.stat().st_mtime_ns for p in results.glob("*.json")} == submitit_sweep["stamps"]
    jobs = _submitit_jobs(submitit_sweep["root"] / "again")
    assert len(jobs) == 3
    for path in submitit_sweep["stamps"]:
        assert not _writers(jobs, results, path.stem)
        assert sum(SKIPPED.format(key=path.stem) in text for text in jobs.values()) == 1
    print(f"submitit local rerun: {seconds:.1f} s")
