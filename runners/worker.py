"""One data-parallel worker of a run: `torchrun ... -m runners.worker CONFIG.yaml`."""

from __future__ import annotations

import sys

from omegaconf import OmegaConf

from records.store import ResultsStore, code_versions
from runners.evaluate import execute
from runners.plan import plan


def main(path: str) -> None:
    cfg = OmegaConf.load(path)
    store = ResultsStore(cfg.results_dir)
    runs = [r for r in plan(cfg, code_versions()) if cfg.force or not store.has(r.key)]
    if runs:
        execute(cfg, runs, store)


if __name__ == "__main__":
    main(sys.argv[1])
