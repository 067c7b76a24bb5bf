"""One data-parallel worker of a run: `torchrun ... -m runners.worker CONFIG.yaml KEYS`.

KEYS (comma-separated) are the runs the launching process claimed (it holds their locks); the
worker computes those and no other, so what it does never depends on the store meanwhile.
"""

from __future__ import annotations

import sys

from omegaconf import OmegaConf

from records.store import ResultsStore, code_versions
from runners.evaluate import execute
from runners.plan import plan


def main(path: str, keys: str) -> None:
    cfg = OmegaConf.load(path)
    claimed = set(keys.split(","))
    runs = [r for r in plan(cfg, code_versions()) if r.key in claimed]
    if runs:
        execute(cfg, runs, ResultsStore(cfg.results_dir))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
