"""Vision-side cost of an N-config sweep relative to one run, with and without the feature cache.

Runs N pre-LLM configurations (default: uniform, random, l2norm, pllava, scc at r = 0.35) of the
tiny model on the synthetic task through the real runner, twice (feature_cache on, then off),
and sums each run's measured video decoding + vision-tower seconds from its records.

    python -m benchmarks.bench_sweep [--limit 8] [--methods uniform scc ...]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir

import runners.schema  # noqa: F401
from records.store import ResultsStore
from runners.evaluate import run

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _vision_seconds(results: Path) -> list[float]:
    """Per run: samples x (mean video decode + mean vision seconds), in run order."""
    seconds = []
    for record in sorted(ResultsStore(results).records(), key=lambda r: r["started_at"]):
        t = record["timings"]
        seconds.append(record["samples"]["count"] * (t["video_decode_s"] + t["vision_s"]))
    return seconds


def _sweep(results: Path, methods: list[str], limit: int, cache: bool) -> list[float]:
    """Run each method at r = 0.35 into `results`; the vision seconds of each run."""
    for method in methods:
        with initialize_config_dir(str(CONFIGS), version_base="1.3"):
            cfg = compose("config", overrides=[
                "model=tiny", f"compressor={method}", "retention=0.35", f"limit={limit}",
                f"results_dir={results}", f"feature_cache={str(cache).lower()}",
            ])
        run(cfg)
    return _vision_seconds(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--methods", nargs="+",
                        default=["uniform", "random", "l2norm", "pllava", "scc"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        _sweep(Path(tmp) / "warm-up", args.methods[:1], 1, cache=False)  # one-off start-up costs
        totals = {
            cache: _sweep(Path(tmp) / f"cache-{cache}", args.methods, args.limit, cache)
            for cache in (True, False)
        }
    one = sorted(totals[False])[len(totals[False]) // 2]  # median run without the cache
    print(f"{len(args.methods)} configs x {args.limit} videos, tiny model on the CPU")
    print("  per run without cache: " + " ".join(f"{s:.2f}" for s in totals[False]))
    print("  per run with cache:    " + " ".join(f"{s:.2f}" for s in totals[True]))
    print(f"  one run (median), vision side:   {one:7.2f} s")
    print(f"  sweep without cache:             {sum(totals[False]):7.2f} s "
          f"({sum(totals[False]) / one:4.2f}x one run)")
    print(f"  sweep with the feature cache:    {sum(totals[True]):7.2f} s "
          f"({sum(totals[True]) / one:4.2f}x one run)")


if __name__ == "__main__":
    main()
