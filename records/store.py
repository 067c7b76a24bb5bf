"""The results store: one JSON record per run, at a path derived from what the run computes.

A run's key hashes the resolved settings that change its numbers (model, compressor and its
parameters, retention, task, frames, seed) together with the versions of the code that computed
them (lmms-eval, transformers, torch, the git commit, the hash of requirements.lock). Records
are written atomically (temporary file in the same folder, then rename), so concurrent workers
and killed runs never leave a half-written record, and a finished record is never rewritten
unless asked.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.environment import lock_hash

SCHEMA_VERSION = 1
_PACKAGES = ("lmms-eval", "transformers", "torch")


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
        """True when a complete record for `key` exists (a corrupt file counts as absent)."""
        try:
            return self.read(key).get("schema_version") == SCHEMA_VERSION
        except (FileNotFoundError, json.JSONDecodeError):
            return False

    def read(self, key: str) -> dict[str, Any]:
        return json.loads(self.path(key).read_text())

    def write(self, key: str, record: Mapping[str, Any]) -> Path:
        """Write `record` for `key` atomically; the schema version is added."""
        self.root.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"schema_version": SCHEMA_VERSION, "key": key, **record}, indent=2,
                          sort_keys=True, default=str)
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=self.root)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(body)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self.path(key)

    def records(self) -> Iterator[dict[str, Any]]:
        """Every complete record, in key order; unreadable files are skipped."""
        for path in sorted(self.root.glob("*.json")):
            try:
                record = json.loads(path.read_text())
            except json.JSONDecodeError:
                continue
            if record.get("schema_version") == SCHEMA_VERSION:
                yield record
