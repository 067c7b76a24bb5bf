"""SCC speed at the paper's scale: 32 frames x 196 tokens, D = 896 (0.5B) and 3584 (7B).

Prints, from one run on one device with the same inputs for every variant:
  (a) the vectorised SCC against the plain per-edge union-find loop (compressors.reference,
      the structure of the official code), and checks both give the same tokens;
  (b) SCC against its floor: the dense similarity products it cannot avoid (per-frame
      [N, N], temporal [K, K], merge [T*N, M]) timed alone;
  (c) budget mode against one threshold pass at the tau the budget search settled on.

    python -m benchmarks.bench_scc [--dims 896 3584] [--device cuda] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import torch

import compressors
from benchmarks.features import region_video
from compressors._core import normalize
from compressors.reference import scc_reference


def _time(fn: Callable[[], object], repeat: int, device: torch.device) -> float:
    """Best wall time of `repeat` calls, synchronising the device."""
    best = float("inf")
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def _floor(video: torch.Tensor, spatial_tokens: int, output_tokens: int) -> Callable[[], object]:
    """SCC's unavoidable dense products alone, at the sizes the real pass met."""
    flat = video.reshape(-1, video.shape[-1])

    def products() -> object:
        per_frame = normalize(video)
        per_frame @ per_frame.transpose(1, 2)
        spatial = normalize(flat[:spatial_tokens])
        spatial @ spatial.T
        return normalize(flat) @ normalize(flat[:output_tokens]).T

    return products


def bench(dim: int, device: torch.device, repeat: int, retentions: list[float]) -> None:
    video = region_video(dim=dim).to(device)
    threshold = compressors.build("scc", tau=0.9)
    out = threshold(video)
    t_pass = _time(lambda: threshold(video), repeat, device)
    t_floor = _time(_floor(video, out.info["spatial_tokens"], out.num_output), repeat, device)
    start = time.perf_counter()
    ref = scc_reference(video, 0.9)
    t_ref = time.perf_counter() - start
    same = torch.allclose(ref.tokens.float(), out.tokens.float(), atol=1e-4) and torch.equal(
        ref.assignment, out.assignment
    )
    print(f"\nD = {dim}, {video.shape[0]} x {video.shape[1]} tokens, device {device}")
    print(f"  tau = 0.9 keeps {out.num_output} tokens ({out.achieved_retention:.1%}), "
          f"{out.info['spatial_tokens']} after the spatial stage")
    print(f"  (a) reference loop {t_ref:8.3f} s | SCC {t_pass:.3f} s | "
          f"speed-up {t_ref / t_pass:5.2f}x | same output: {same}")
    print(f"  (b) floor (products alone) {t_floor:.3f} s | SCC / floor {t_pass / t_floor:5.2f}x")
    for retention in [round(out.achieved_retention, 3), *retentions]:
        budget = compressors.build("scc", retention=retention)
        found = budget(video)
        t_budget = _time(partial(budget, video), repeat, device)
        same_tau = compressors.build("scc", tau=found.info["tau"])
        t_same = _time(partial(same_tau, video), repeat, device)
        print(f"  (c) retention {retention:5.3f}: budget {t_budget:.3f} s "
              f"({found.num_output} tokens, tau {found.info['tau']:.4f}, "
              f"{found.info['probes']} probes) | pass at that tau {t_same:.3f} s | "
              f"ratio {t_budget / t_same:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[896, 3584])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--retentions", type=float, nargs="*", default=[0.5, 0.1])
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    for dim in args.dims:
        bench(dim, torch.device(args.device), args.repeat, args.retentions)


if __name__ == "__main__":
    main()
