"""The results store: one JSON record per run, at a path derived from what the run computes.

A run's key hashes the resolved settings that change its numbers (model, compressor and its
parameters, retention, task, frames, seed) together with the versions of the code that computed
them (lmms-eval, transformers, torch, the git commit, the hash of requirements.lock). Records
are written atomically (temporary file in the same folder, then rename), so concurrent workers
and killed runs never leave a half-written record, and a finished record is never rewritten
unless asked. Records are group-readable (0644 under the usual umask); a temporary file left by a
killed write is removed by the next sweep (`remove_stale_tmp`); a sweep computes a run under
its lock, `<results_dir>/.locks/<key>.lock` (`lock`), so concurrent sweeps share the work.

Reading survives any file: one that is not a readable schema-1 record (`records.schema`) is
skipped with a warning naming it and why (`has` counts it as absent, so its run is recomputed),
and two files holding the same key are never both used (`deduplicate`). Folders written on
several machines merge into one (`merge`, `scissorbench merge`): a key is kept once, and a
conflicting record is reported, never silently overwritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from filelock import FileLock

from harness.environment import lock_hash
from records.schema import SCHEMA_VERSION, parse

log = logging.getLogger("scissorbench.records")
_PACKAGES = ("lmms-eval", "transformers", "torch")
STALE_TMP_S = 600.0  # a temporary record file this old is from a killed write


def code_versions() -> dict[str, str]:
    """Versions of the packages that compute results, the git commit of this checkout and the
    hash of requirements.lock ("none" when installed without the repository)."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    versions["git_commit"] = _git_commit()
    versions["lock"] = lock_hash() or "none"
    return versions


def _git_commit() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()


class _RunLock(FileLock):
    """`FileLock` as filelock defines it, one OS lock per instance: lmms-eval's evaluator turns
    `FileLock` itself into a reentrant per-path singleton, under which a second sweep in the
    same process would take a run's lock while the first holds it."""


def _umask() -> int:
    """The process's umask (reading it means setting it: restored at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def run_key(settings: Mapping[str, Any], versions: Mapping[str, str]) -> str:
    """A stable 16-hex-digit key of what a run computes and the code that computes it."""
    payload = json.dumps({"settings": settings, "versions": versions}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class ResultsStore:
    """A folder of run records: `<results_dir>/<key>.json`."""

    def __init__(self, results_dir: str | os.PathLike[str]) -> None:
        self.root = Path(results_dir)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def has(self, key: str) -> bool:
        """True when a readable record for `key` is at its path; an unreadable one counts as
        absent (with a warning), so its run is recomputed and the file replaced."""
        return self._readable(key) is not None

    def _readable(self, key: str) -> dict[str, Any] | None:
        """`key`'s record, or None when there is none or it is unreadable (with a warning)."""
        try:
            return self.read(key)
        except FileNotFoundError:
            return None
        except MalformedRecord as err:
            log.warning("%s; run %s counts as not done and is recomputed", err, key)
            return None

    def read(self, key: str) -> dict[str, Any]:
        """The record at `key`'s path: FileNotFoundError when there is none, MalformedRecord
        (naming the file and why) when it is not a readable schema-1 record of `key`."""
        path = self.path(key)
        record, why = _read(path, missing_ok=False)
        if record is not None and record["key"] != key:
            why = f"its key is {record['key']!r}, not {key!r}"
        if why is not None:
            raise MalformedRecord(path, why)
        return record

    def write(self, key: str, record: Mapping[str, Any]) -> Path:
        """Write `record` for `key` atomically; the schema version is added."""
        self.root.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"schema_version": SCHEMA_VERSION, "key": key, **record}, indent=2,
                          sort_keys=True, default=str)
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=self.root)
        try:
            os.fchmod(fd, 0o666 & ~_umask())  # as open() would: group-readable, not mkstemp's 0600
            with os.fdopen(fd, "w") as handle:
                handle.write(body)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self.path(key)

    def status(self, key: str) -> str | None:
        """The `status` of `key`'s record ("finished", "failed"), None when there is none (or
        an unreadable one): what decides whether a sweep computes the run again."""
        record = self._readable(key)
        return None if record is None else record.get("status")

    def lock(self, key: str) -> FileLock:
        """The lock a sweep holds while it computes `key`, `<root>/.locks/<key>.lock`: taken
        with `acquire(blocking=False)`; the OS drops it when its process dies, so a killed
        sweep never blocks the next."""
        (self.root / ".locks").mkdir(parents=True, exist_ok=True)
        return _RunLock(self.root / ".locks" / f"{key}.lock")

    def remove_stale_tmp(self, age_s: float = STALE_TMP_S) -> list[Path]:
        """Delete `.<key>.*.tmp` files older than `age_s`: left by a write killed between
        creating and renaming (a live write takes milliseconds). Returns what was removed."""
        cutoff, removed = time.time() - age_s, []
        for tmp in self.root.glob(".*.tmp"):
            try:
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
                    removed.append(tmp)
            except FileNotFoundError:  # renamed or removed meanwhile
                continue
        return removed

    def records(self) -> Iterator[dict[str, Any]]:
        """Every readable record, in file-name order, one per key (`deduplicate`); the files
        skipped and the copies dropped are each named in a warning."""
        kept, _dropped = deduplicate(self.scan().records)
        for _path, record in kept:
            yield record

    def scan(self) -> Scan:
        """Read every `*.json` of the folder once: the readable records with their files, and
        the files skipped with why (one warning each)."""
        found = Scan()
        for path in sorted(self.root.glob("*.json")):
            record, why = _read(path, missing_ok=True)
            if record is not None:
                found.records.append((path, record))
            elif why is not None:
                log.warning("skipped %s: %s", path, why)
                found.skipped.append((path, why))
        return found


class MalformedRecord(ValueError):
    """A file at a record's path that is not a readable schema-1 record."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"{path} is not a readable record: {why}")
        self.path, self.why = path, why


@dataclass
class Scan:
    """What reading a results folder found."""

    records: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (file, why)


def _read(path: Path, missing_ok: bool) -> tuple[dict[str, Any] | None, str | None]:
    """(record, None), or (None, why the file is no record); (None, None) for a file gone
    meanwhile when `missing_ok`, else FileNotFoundError."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if missing_ok:
            return None, None
        raise
    except OSError as err:
        return None, f"unreadable ({err.strerror or err})"
    return parse(data)


def deduplicate(entries: Iterable[tuple[Path, dict[str, Any]]]
                ) -> tuple[list[tuple[Path, dict[str, Any]]], list[Path]]:
    """One (file, record) per key, never a mix or a mean of copies: the file named `<key>.json`
    (the one `read` and `has` see), else the latest `finished_at`, else the first given. A
    warning per duplicated key lists its files and the one kept. Returns (kept, dropped)."""
    entries = list(entries)
    by_key: dict[str, list[int]] = {}
    for i, (_path, record) in enumerate(entries):
        by_key.setdefault(record["key"], []).append(i)
    keep = {max(copies, key=lambda i: _rank(entries[i], key)) for key, copies in by_key.items()}
    for key, copies in by_key.items():
        if len(copies) > 1:
            kept = next(entries[i][0] for i in copies if i in keep)
            log.warning("%d files hold record %s (%s); kept %s, ignored the others", len(copies),
                        key, ", ".join(str(entries[i][0]) for i in copies), kept)
    return ([e for i, e in enumerate(entries) if i in keep],
            [e[0] for i, e in enumerate(entries) if i not in keep])


def _rank(entry: tuple[Path, dict[str, Any]], key: str) -> tuple[bool, str]:
    """Which copy of `key` `deduplicate` keeps: the highest rank, the first of equal ones."""
    path, record = entry
    return path.name == f"{key}.json", record.get("finished_at") or ""


@dataclass
class Merge:
    """What `merge` did: records copied into the target, records the target already held
    identically (kept once), and conflicts (same key, different record), never overwritten."""

    copied: list[str] = field(default_factory=list)
    same: list[str] = field(default_factory=list)
    conflicts: list[tuple[str, Path, Path, list[str]]] = field(default_factory=list)

    def describe(self) -> list[str]:
        """One line per conflict: the key, both files and the fields that differ."""
        return [f"{key}: {source} differs from {target} in {', '.join(fields)}; kept {target}"
                for key, source, target, fields in self.conflicts]


def merge(sources: Iterable[str | os.PathLike[str]], target: str | os.PathLike[str]) -> Merge:
    """Merge the records of several results folders (runs from several machines) into
    `target`. A key the target lacks is copied (written atomically); the same key with an
    equal record is kept once, equal meaning equal but for when it ran and how long it took
    (`RUN_TIME_FIELDS`: two machines that computed the same run never time it alike); the same
    key with a different record (another machine got other numbers, or one failed) is a
    conflict, reported and never overwritten: the target keeps its own. Files that are not
    records are skipped with a warning, as everywhere."""
    into = ResultsStore(target)
    report = Merge()
    for source in sources:
        kept, _ = deduplicate(ResultsStore(source).scan().records)
        for path, record in kept:
            key = record["key"]
            try:
                held = into.read(key)
            except FileNotFoundError:
                held = None
            except MalformedRecord as err:  # an unreadable file is not silently replaced
                report.conflicts.append((key, path, err.path, ["unreadable target"]))
                continue
            if held is None:
                body = {k: v for k, v in record.items() if k not in ("schema_version", "key")}
                into.write(key, body)
                report.copied.append(key)
            else:
                fields = sorted(k for k in set(held) | set(record)
                                if k not in RUN_TIME_FIELDS and held.get(k) != record.get(k))
                if fields:
                    report.conflicts.append((key, path, into.path(key), fields))
                else:
                    report.same.append(key)
    return report


RUN_TIME_FIELDS = frozenset({"started_at", "finished_at", "duration_s", "timings",
                             "peak_memory_bytes"})
"""Record fields that say when and how fast a run went, not what it computed: `merge` keeps
the target's where two copies of a key differ only in these."""
