"""The locked environment: the lock covers what is installed and what pyproject asks for, records
carry its hash, and a drifted package is named with the fix."""

from __future__ import annotations

import hashlib
import logging
from importlib import metadata
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from harness import environment
from records.store import code_versions

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
NOT_FROZEN = {"pip", "setuptools", "wheel", "scissorbench"}  # pip freeze leaves these out


def _lock_lines() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_every_installed_package_is_the_locked_version():
    """make test installs from the lock: nothing here may be unpinned or another version."""
    pins = _lock_lines()
    installed = {canonicalize_name(d.metadata["Name"]): d.version
                 for d in metadata.distributions()}
    differing = {name: (version, pins.get(name)) for name, version in installed.items()
                 if name not in NOT_FROZEN and pins.get(name) != version}
    assert differing == {}


def test_the_lock_satisfies_pyproject_ranges():
    """A lock left stale after pyproject changed fails here (regenerate with `make lock`)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["dev"]
    pins = _lock_lines()
    for text in wanted:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in requirements.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (text, pins[name])


def test_filelock_is_one_lmms_eval_can_import():
    """filelock 4.3 removed filelock._api, which lmms-eval 0.7.3's evaluator imports when it
    runs (`_enable_reentrant_filelocks`)."""
    from lmms_eval.evaluator import _enable_reentrant_filelocks

    _enable_reentrant_filelocks()


def test_records_carry_the_lock_hash():
    digest = hashlib.sha256(LOCK.read_bytes()).hexdigest()[:16]
    assert code_versions()["lock"] == digest == environment.lock_hash()


def test_no_drift_here_and_drift_is_named_with_the_fix(tmp_path, caplog, monkeypatch):
    assert environment.drift() == []
    stale = tmp_path / "requirements.lock"
    stale.write_text(LOCK.read_text().replace(
        f"transformers=={metadata.version('transformers')}\n", "transformers==4.45.0\n"))
    found = environment.drift(path=stale)
    assert found == [("transformers", "4.45.0", metadata.version("transformers"))]
    monkeypatch.setattr(environment, "_warned", False)
    with caplog.at_level(logging.WARNING, logger="scissorbench"):
        environment.warn_drift(stale)
        environment.warn_drift(stale)  # once per process
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1
    assert "transformers" in messages[0] and "locked 4.45.0" in messages[0]
    assert f"pip install -c {stale}" in messages[0]
    assert environment.lock_hash(tmp_path / "absent.lock") is None
    assert environment.drift(path=tmp_path / "absent.lock") == []
