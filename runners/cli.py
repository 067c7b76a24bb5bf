"""`scissorbench run`: the Hydra entry point. Composes, validates, logs, runs, says what it did.

Every job of the command line is planned before any model loads (`validate`); the sweep then
runs through Hydra (any launcher) and ends with a summary of every planned run: finished,
skipped, running elsewhere, failed (with the first line of its error), and where the records
are. The exit code is 1 when any run failed, 2 for an invalid job, 130 when interrupted.
Errors are one line; `--debug` (or HYDRA_FULL_ERROR=1) shows their tracebacks.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

import hydra
from filelock import Timeout
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import runners.schema  # noqa: F401  registers the structured config `run_schema`
from records.store import ResultsStore, code_versions
from runners.evaluate import Outcome, RecordError, sweep
from runners.plan import ConfigError, Run, plan, table_report

log = logging.getLogger("scissorbench.run")
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
INTERRUPTED = "scissorbench run: interrupted; finished records are kept, rerun to resume"
# what a top-level field takes, for a one-line error instead of Hydra's "Error merging override"
_TAKES = {
    "retention": "a number in (0, 1] or null", "seed": "an integer",
    "limit": "an integer >= 1 or null", "processes": "an integer >= 1",
    "gpus_per_job": "an integer >= 1", "force": "true or false", "retry_failed": "true or false",
    "feature_cache": "true or false",
}
# the outcomes of the jobs this process ran (Hydra's basic launcher runs them all here);
# `command` reads them for the summary, and the store for jobs run elsewhere (other launchers)
_OUTCOMES: dict[str, Outcome] = {}
_JOB_ERRORS: list[str] = []


def _pin_gpus(cfg: DictConfig) -> None:
    """One GPU group per multirun job, round-robin over `gpus` (Hydra launchers assign none)."""
    if not cfg.gpus:
        return
    ids = [str(g) for g in cfg.gpus]
    groups = [ids[i : i + cfg.gpus_per_job] for i in range(0, len(ids), cfg.gpus_per_job)]
    try:
        num = HydraConfig.get().job.num or 0
    except ValueError:
        num = 0
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(groups[num % len(groups)])
    log.info("job %d pinned to CUDA_VISIBLE_DEVICES=%s", num, os.environ["CUDA_VISIBLE_DEVICES"])


def _debug() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


@hydra.main(config_path=str(CONFIGS), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> list[Outcome]:
    """One job: its runs' outcomes, also kept for `command`'s summary. An error that stops the
    job is one line in the log (a traceback with --debug) and a failed job in the summary; one
    that stops every job (a record that cannot be written) ends the sweep."""
    log.info("config:\n%s", OmegaConf.to_yaml(cfg, resolve=True))
    _pin_gpus(cfg)
    try:
        outcomes = sweep(cfg)
    except (ConfigError, RecordError) as err:
        if _debug():
            raise
        _JOB_ERRORS.append(str(err))
        log.error("%s", err)
        raise SystemExit(2 if isinstance(err, ConfigError) else 1) from err
    except Exception as err:  # the job failed as a whole; the sweep goes on
        if _debug():
            raise
        _JOB_ERRORS.append(f"{type(err).__name__}: {_first_line(err)}")
        log.error("job failed: %s: %s (--debug shows the traceback)", type(err).__name__,
                  _first_line(err))
        return []
    _OUTCOMES.update((o.run.key, o) for o in outcomes)
    return outcomes


def _first_line(err: BaseException | str) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def sweep_overrides(overrides: list[str]) -> list[list[str]]:
    """Every job's overrides of a multirun: command-line sweeps and `hydra.sweeper.params`."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    fixed = [o.input_line for o in parser.parse_overrides(overrides) if not o.is_sweep_override()]
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose("config", overrides=fixed, return_hydra_config=True)
    preset = cfg.hydra.sweeper.get("params") or {}
    named = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    extra = [f"{k}={v}" for k, v in preset.items() if k not in named]
    parsed = parser.parse_overrides([*overrides, *extra])
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def _composition_error(err: Exception) -> str:
    """Hydra's or OmegaConf's error, as one line where a field's type is the problem."""
    bad = re.match(r"Error merging override ([\w.]+)=(.*)", str(err))
    if bad and bad[1] in _TAKES:
        return f"{bad[1]} must be {_TAKES[bad[1]]}, got {bad[2]!r}"
    cause = f" ({_first_line(err.__cause__)})" if err.__cause__ else ""
    return str(err).strip() + cause


def check(overrides: list[str], multirun: bool) -> tuple[list[Run], list[str]]:
    """Compose and plan every job before any model loads: (every job's runs, each bad job's
    one-paragraph error). A paper-table preset (`experiment:` block) prints one line: the
    table's methods missing from the harness (not run) and the cells it leaves out."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    runs: list[Run] = []
    errors: list[str] = []
    tables: dict[str, int] = {}  # a paper-table preset's report -> its jobs that are not cells
    jobs = sweep_overrides(overrides) if multirun else [overrides]
    for job in jobs:
        try:
            with initialize_config_dir(str(CONFIGS), version_base="1.3"):
                cfg = compose("config", overrides=job)
            report = table_report(cfg)
            planned = plan(cfg, code_versions())
            if report is not None:
                tables[report] = tables.get(report, 0) + (not planned)
            runs += [_with_dir(r, str(cfg.results_dir)) for r in planned]
        except ConfigError as err:
            errors.append(f"invalid job {' '.join(job)}:\n  {err}")
        except (HydraException, OmegaConfBaseException) as err:
            errors.append(f"invalid job {' '.join(job)}:\n  {_composition_error(err)}")
    for report, skipped in tables.items():  # one line per table, before anything runs
        nocell = f"; {skipped} of {len(jobs)} jobs are not cells of the table (skipped)"
        print(f"[run] {report}{nocell if skipped else ''}")
    return runs, errors


def _with_dir(r: Run, results_dir: str) -> Run:
    """`r` with its results folder, for the summary (a sweep may span several)."""
    return Run(r.key, {**r.settings, "results_dir": results_dir}, r.include_path, r.versions)


def validate(overrides: list[str], multirun: bool) -> int:
    """Compose and plan every job before any model loads; report each bad one."""
    _runs, errors = check(overrides, multirun)
    for error in errors:
        print(f"scissorbench run: {error}", file=sys.stderr)
    return len(errors)


def _recorded(r: Run, started: str) -> Outcome:
    """The outcome of a run this process did not see run (another launcher's job), from the
    store: a record written since `started` is this sweep's; no record is a failure, unless
    another live sweep holds the run's lock."""
    store = ResultsStore(r.settings["results_dir"])
    path, status = store.path(r.key), store.status(r.key)
    if status is None:
        try:
            with store.lock(r.key).acquire(blocking=False):
                return Outcome(r, "failed", path, "no record was written (see the job's log)")
        except Timeout:
            return Outcome(r, "elsewhere", path)
    record = store.read(r.key)
    fresh = str(record.get("finished_at") or "") >= started
    if status == "finished":
        return Outcome(r, "finished" if fresh else "skipped", path)
    error = _first_line(str(record.get("error") or "no error given"))
    return Outcome(r, "failed", path, error, kept=not fresh)


def _label(r: Run) -> str:
    settings = r.settings
    retention = settings.get("retention")
    return (f"{settings['task']} {settings['compressor']['name']}"
            + ("" if retention is None else f" retention={retention:g}") + f" ({r.key})")


def summarize(runs: list[Run], started: str) -> bool:
    """Print what the sweep did with every planned run; True when none failed."""
    outcomes = {r.key: _OUTCOMES.get(r.key) or _recorded(r, started) for r in runs}
    count = {s: sum(o.status == s for o in outcomes.values())
             for s in ("finished", "skipped", "elsewhere", "failed")}
    failed = count["failed"]
    folders = sorted({str(Path(r.settings["results_dir"]).resolve()) for r in runs})
    print(f"[run] {len(outcomes)} runs: {count['finished']} finished, {count['skipped']} "
          f"skipped (finished before), {count['elsewhere']} running elsewhere, {failed} failed; "
          f"records in {', '.join(folders)}")
    for o in outcomes.values():
        if o.status == "failed":
            kept = " (kept from an earlier sweep: retry_failed=false)" if o.kept else ""
            print(f"[run] failed {_label(o.run)}{kept}: {o.error}")
    for error in _JOB_ERRORS:
        print(f"[run] failed job: {error}")
    return failed == 0 and not _JOB_ERRORS


def command(argv: list[str]) -> int:
    """Validate every job of the command line, run Hydra with it (-m, --help, ...), summarize.
    Exit code: 0 when every run is finished or running elsewhere, 1 when any failed, 2 for an
    invalid job, 130 when interrupted (Ctrl-C)."""
    if "--debug" in argv:
        argv = [a for a in argv if a != "--debug"]
        os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        return _command(argv)
    except KeyboardInterrupt:
        if _debug():
            raise
        print(INTERRUPTED, file=sys.stderr)
        return 130


def _command(argv: list[str]) -> int:
    flags = [a for a in argv if a.startswith("-")]
    sys.argv = ["scissorbench run", *argv]
    if any(f in ("--help", "-h", "--hydra-help", "--info", "--cfg", "-c") for f in flags):
        main()
        return 0
    overrides = [a for a in argv if not a.startswith("-")]
    runs, errors = check(overrides, multirun=bool({"-m", "--multirun"} & set(flags)))
    for error in errors:
        print(f"scissorbench run: {error}", file=sys.stderr)
    if errors:
        return 2
    _OUTCOMES.clear()
    _JOB_ERRORS.clear()
    started, code = datetime.now(timezone.utc).isoformat(), 0
    try:
        main()
    except SystemExit as stop:  # a job that stopped the sweep, or Hydra's own error exit
        code = stop.code if isinstance(stop.code, int) else 1
    ok = summarize(runs, started)
    return code or (0 if ok else 1)
