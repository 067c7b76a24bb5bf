"""`scissorbench run`: the Hydra entry point. Composes, validates, logs, runs, says where."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import runners.schema  # noqa: F401  registers the structured config `run_schema`
from records.store import code_versions
from runners.evaluate import run
from runners.plan import ConfigError, plan

log = logging.getLogger("scissorbench.run")
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


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


@hydra.main(config_path=str(CONFIGS), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    log.info("config:\n%s", OmegaConf.to_yaml(cfg, resolve=True))
    _pin_gpus(cfg)
    try:
        paths = run(cfg)
    except ConfigError as err:
        log.error("%s", err)
        raise SystemExit(2) from err
    for path in paths:
        print(f"[run] record: {path}")


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


def validate(overrides: list[str], multirun: bool) -> int:
    """Compose and plan every job before any model loads; report each bad one."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    jobs = sweep_overrides(overrides) if multirun else [overrides]
    bad = 0
    for job in jobs:
        try:
            with initialize_config_dir(str(CONFIGS), version_base="1.3"):
                plan(compose("config", overrides=job), code_versions())
        except (ConfigError, HydraException) as err:
            bad += 1
            print(f"scissorbench run: invalid job {' '.join(job)}:\n  {err}", file=sys.stderr)
    return bad


def command(argv: list[str]) -> int:
    """Validate every job of the command line, then run Hydra with it (-m, --help, ...)."""
    flags = [a for a in argv if a.startswith("-")]
    if not any(f in ("--help", "-h", "--hydra-help", "--info", "--cfg", "-c") for f in flags):
        overrides = [a for a in argv if not a.startswith("-")]
        if validate(overrides, multirun=bool({"-m", "--multirun"} & set(flags))):
            return 2
    sys.argv = ["scissorbench run", *argv]
    main()
    return 0
