"""Efficiency at the real dimensions: every compressor's measured prefill speedup beside its
FLOPs prediction, with stage times, time to first token and peak memory, in one run.

Random weights at the real shapes, built through `backbones.tiny`'s LLaVA-OneVision config
(the transformers classes a hub checkpoint loads into) and run by the adapter
`backbones.load` returns for one (`LlavaOnevisionAdapter`: `prepare`, then `generate`, whose
accounting gives the stage times); the weights are never written to disk (15 GB at 7B). The
vision tower is SigLIP-so400m (1152 wide, 27 layers, 16 heads, MLP 4304, 14 px patches at
384 px: 27 x 27 = 729 patches, bilinearly pooled to 14 x 14 = 196 tokens per frame, as
LLaVA-OneVision), the LLM Qwen2-0.5B (24 layers, d 896, FFN 4864, 14 / 2 heads) or Qwen2-7B
(28 layers, d 3584, FFN 18944, 28 / 4 heads) with Qwen2's 151936-entry vocabulary, and
FastVID's SigLIP head is a random one-layer SigLIP (`write_tiny_siglip_head`). Frames are
seeded random block images that change a little from frame to frame.

Per (LLM, method, retention): the median over `--repeat` samples (after `--warmup` ones) of
each stage (vision, compress, prefill, decode; CUDA events on CUDA, `backbones.decoder._now`)
and of the time to first token (host clock, from before `prepare` to the first token's
logits; no video decoding here); the peak memory (CUDA: since `prepare`; CPU: the process's
peak RSS); the measured prefill speedup (the full model's median prefill / this one's) beside
the one FLOPs predict (1 / `reporting.cost.estimate(...).prefill_ratio` with the counts the
run fed: its text tokens, its kept visual tokens, FastV's layer K) and their ratio; and the
compressor's seconds as a share of this row's prefill. A method that cannot run a setting
(DyCoke below its whole-frame minimum; `scc_official`, threshold-only) is printed as skipped
with its reason. The full model always runs first: every speedup needs it.

    python -m benchmarks.bench_gpu                       # cuda if there is one: 0.5b and 7b
    python -m benchmarks.bench_gpu --dims 7b --methods none scc fastv --retentions 0.1
    python -m benchmarks.bench_gpu --reduced --device cpu --json rows.json   # < 1 min, 2 cores
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

import compressors
from backbones import tiny
from backbones.llava_onevision import LlavaOnevisionAdapter
from backbones.siglip_head import write_tiny_siglip_head
from reporting.cost import estimate

PROMPT = "Describe what happens in the video."
QWEN2_VOCAB = 151936


@dataclass(frozen=True)
class Geometry:
    """One model's shapes: the SigLIP tower, the frames and the Qwen2 LLM."""

    name: str
    layers: int
    hidden: int
    ffn: int
    heads: int
    kv_heads: int
    vocab: int | None = QWEN2_VOCAB  # None: the byte tokenizer's own
    vision_layers: int = 27
    vision_hidden: int = 1152
    vision_ffn: int = 4304
    vision_heads: int = 16
    image_size: int = 384
    patch_size: int = 14


LLMS = {
    "0.5b": Geometry("0.5b", layers=24, hidden=896, ffn=4864, heads=14, kv_heads=2),
    "7b": Geometry("7b", layers=28, hidden=3584, ffn=18944, heads=28, kv_heads=4),
}
REDUCED = {  # small enough for a 2-core CPU: 4 LLM layers (FastV's K = 3 needs K < L), 16 / frame
    "vocab": None, "layers": 4, "heads": 4, "kv_heads": 2, "vision_layers": 2,
    "vision_hidden": 64, "vision_ffn": 128, "vision_heads": 4, "image_size": 112,
}
REDUCED_HIDDEN = {"0.5b": 64, "7b": 128}
REDUCED_FRAMES = 8


def reduced(geometry: Geometry) -> Geometry:
    """`geometry` shrunk for `--reduced`: same code path, laptop sizes."""
    hidden = REDUCED_HIDDEN[geometry.name]
    return replace(geometry, hidden=hidden, ffn=2 * hidden, **REDUCED)


# --------------------------------------------------------------------------- the model
@contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Parameters created in `dtype` (a 7B never exists in float32)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build(geometry: Geometry, device: torch.device, dtype: torch.dtype, head_dir: Path,
          seed: int = 0) -> LlavaOnevisionAdapter:
    """The adapter over a seeded random LLaVA-OneVision of `geometry` on `device` in `dtype`:
    `backbones.tiny`'s config and processor at these sizes, with the tower's MLP width and the
    LLM's vocabulary and context set to the real model's; FastVID's head from `head_dir`."""
    from transformers import GenerationConfig, LlavaOnevisionForConditionalGeneration

    g = geometry
    tokenizer = tiny.byte_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in tiny.SPECIAL_TOKENS}
    config = tiny._config(
        ids, len(tokenizer), vision_layers=g.vision_layers, llm_layers=g.layers,
        image_size=g.image_size, patch_size=g.patch_size, vision_hidden=g.vision_hidden,
        vision_heads=g.vision_heads, hidden_size=g.hidden, intermediate_size=g.ffn,
        heads=g.heads, kv_heads=g.kv_heads, initializer_range=0.02,
    )
    config.vision_config.intermediate_size = g.vision_ffn
    config.text_config.vocab_size = g.vocab or len(tokenizer)
    config.text_config.max_position_embeddings = 32768
    torch.manual_seed(seed)
    with _default_dtype(dtype), torch.device(device):
        model = LlavaOnevisionForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"], do_sample=False
    )
    processor = tiny._processor(tokenizer, config, g.image_size, g.patch_size)
    write_tiny_siglip_head(head_dir, g.vision_hidden, heads=g.vision_heads, seed=seed,
                           initializer_range=0.02)
    return LlavaOnevisionAdapter(model, processor, preprocess="hf", vision_head=str(head_dir))


def frames(count: int, size: int, seed: int = 0) -> np.ndarray:
    """[count, size, size, 3] uint8: random 8 x 8 colour blocks, a tenth of them redrawn from
    one frame to the next (static regions for the temporal methods, motion for the rest)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    out = []
    for _ in range(count):
        moved = rng.random((8, 8)) < 0.1
        blocks = np.where(moved[..., None], rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
                          blocks)
        scale = -(-size // 8)
        out.append(np.kron(blocks, np.ones((scale, scale, 1), dtype=np.uint8))[:size, :size])
    return np.stack(out)


# ------------------------------------------------------------------------ measurement
def _sample(llm: LlavaOnevisionAdapter, video: np.ndarray, compressor: Any,
            new_tokens: int) -> dict[str, Any]:
    """One request: stage seconds, TTFT (host clock, `prepare` to the first logits), peak
    memory and the token counts of the accounting."""
    started = time.perf_counter()
    prepared = llm.prepare(video, compressor)
    _, acc = llm.generate(prepared, PROMPT, max_new_tokens=new_tokens)
    return {**{k: float(v) for k, v in acc.timings.items()},
            "ttft": acc.first_logits_at - started, "peak": int(acc.peak_memory_bytes),
            "fed": acc.visual_tokens_fed, "visual": acc.visual_tokens,
            "per_layer": list(acc.tokens_per_layer), "text": acc.text_tokens,
            "generated": acc.generated_tokens, "layer": (prepared.in_llm or {}).get("layer", 0)}


def measure(llm: LlavaOnevisionAdapter, video: np.ndarray, name: str, retention: float | None,
            args: argparse.Namespace) -> dict[str, Any]:
    """Median stage times over `args.repeat` samples (after `args.warmup`) of one setting, or
    {"skipped": reason} when the method cannot run it."""
    if name != "none" and name not in compressors.budgeted():
        return {"skipped": f"{name} has no budget mode (threshold only): no retention to set"}
    try:
        compressor = None if name == "none" else compressors.build(name, retention=retention)
        runs = [_sample(llm, video, compressor, args.new_tokens)
                for _ in range(args.warmup + args.repeat)][args.warmup:]
    except (ValueError, NotImplementedError) as err:  # e.g. DyCoke below its minimum
        return {"skipped": str(err).split(". ")[0]}
    row = {stage: statistics.median(r[stage] for r in runs)
           for stage in ("vision", "compress", "prefill", "decode", "ttft")}
    last = runs[-1]
    return {**row, "peak_memory_bytes": max(r["peak"] for r in runs),
            **{k: last[k] for k in ("fed", "visual", "text", "generated", "layer")},
            "kept": last["per_layer"][-1] - last["text"]}


def predicted_speedup(geometry: Geometry, frames_count: int, tokens_per_frame: int,
                      retention: float | None, row: dict[str, Any]) -> float:
    """1 / the FLOPs ratio of the setting (`reporting.cost.estimate`, the counts it ran)."""
    est = estimate(geometry.layers, geometry.hidden, geometry.ffn, retention,
                   layer=row["layer"], frames=frames_count, tokens_per_frame=tokens_per_frame,
                   text=row["text"], kept=row["kept"])
    return 1 / est.prefill_ratio


def run_model(geometry: Geometry, args: argparse.Namespace, device: torch.device,
              dtype: torch.dtype) -> list[dict[str, Any]]:
    """Every (method, retention) row of one model, the full model first."""
    with tempfile.TemporaryDirectory() as tmp:
        llm = build(geometry, device, dtype, Path(tmp) / "siglip_head")
        video = frames(args.frames, geometry.image_size)
        settings = [("none", None)] + [(m, r) for m in args.methods if m != "none"
                                       for r in args.retentions]
        rows, full = [], None
        for name, retention in settings:
            row = {"dims": geometry.name, "method": name, "retention": retention or 1.0,
                   **measure(llm, video, name, retention, args)}
            if "skipped" not in row:
                full = row["prefill"] if name == "none" else full
                _add_ratios(row, full, predicted_speedup(
                    geometry, args.frames, llm.tokens_per_frame, retention, row))
            rows.append(row)
            print(_line(row), flush=True)
    del llm
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def _add_ratios(row: dict[str, Any], full_prefill: float, predicted: float) -> None:
    """The measured prefill speedup, the predicted one, their ratio, the compressor's share."""
    measured = full_prefill / row["prefill"] if row["prefill"] > 0 else math.nan
    row.update(speedup=measured, predicted_speedup=predicted,
               measured_over_predicted=measured / predicted,
               compress_share=row["compress"] / row["prefill"] if row["prefill"] > 0 else math.nan)


# --------------------------------------------------------------------------- printing
_HEADER = (f"{'method':<12} {'r':>5} {'fed':>6} {'vision':>9} {'compress':>9} {'prefill':>9} "
           f"{'decode':>9} {'TTFT':>9} {'peak GiB':>8} {'measured':>8} {'predicted':>9} "
           f"{'meas/pred':>9} {'comp/pre':>8}")
"""The printed columns; measured / predicted: the prefill speedups, by time and by FLOPs."""


def _line(row: dict[str, Any]) -> str:
    """One printed row: times in ms, the two speedups and their ratio."""
    head = f"{row['method']:<12} {row['retention'] * 100:>4g}%"
    if "skipped" in row:
        return f"{head} skipped: {row['skipped']}"
    ms = " ".join(f"{row[s] * 1000:>7.1f}ms" for s in
                  ("vision", "compress", "prefill", "decode", "ttft"))
    return (f"{head} {row['fed']:>6} {ms} {row['peak_memory_bytes'] / 2**30:>8.2f} "
            f"{row['speedup']:>7.2f}x {row['predicted_speedup']:>8.2f}x "
            f"{row['measured_over_predicted']:>9.2f} {row['compress_share']:>8.1%}")


def _title(geometry: Geometry, args: argparse.Namespace, device: torch.device,
           tokens_per_frame: int) -> str:
    g = geometry
    return (f"\n== {g.name}: LLM {g.layers} layers, d {g.hidden}, FFN {g.ffn}, {g.heads}/"
            f"{g.kv_heads} heads; SigLIP {g.vision_layers} x {g.vision_hidden}, "
            f"{g.image_size} px; {args.frames} frames x {tokens_per_frame} tokens; "
            f"{device.type} {args.dtype}; median of {args.repeat} after {args.warmup} warm-up; "
            f"{args.new_tokens} new tokens\n{_HEADER}")


# ------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options (module docstring); defaults: cuda if there is one, bfloat16 there and
    float32 on the CPU, 32 frames (8 with --reduced)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", nargs="+", choices=sorted(LLMS), default=["0.5b", "7b"])
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--retentions", nargs="+", type=float, default=[0.5, 0.25, 0.1])
    parser.add_argument("--methods", nargs="+", default=compressors.available())
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None)
    parser.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--reduced", action="store_true",
                        help="4-layer LLM, 2-layer tower, 8 frames of 112 px: CPU-sized")
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.methods) - set(compressors.available()))
    if unknown:
        parser.error(f"unknown methods {unknown}; available: {compressors.available()}")
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    args.frames = args.frames or (REDUCED_FRAMES if args.reduced else 32)
    return args


def _quiet() -> None:
    """No transformers progress bars (the SigLIP head's save and load) between the rows."""
    from transformers.utils import logging

    logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run every requested model; print its rows as they come; write them to `--json`."""
    args = parse_args(argv)
    _quiet()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    rows = []
    for name in args.dims:
        geometry = reduced(LLMS[name]) if args.reduced else LLMS[name]
        per_frame = math.ceil(geometry.image_size // geometry.patch_size / 2) ** 2
        print(_title(geometry, args, device, per_frame), flush=True)
        rows += run_model(geometry, args, device, dtype)
    if args.json is not None:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        geometries = {n: asdict(reduced(LLMS[n]) if args.reduced else LLMS[n])
                      for n in args.dims}
        args.json.write_text(json.dumps({"settings": settings, "geometry": geometries,
                                         "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
