"""Train a micro video-LLM (`synthetic.micro`) on the synthetic video QA, on the CPU.

    scissorbench train-micro --output checkpoints/micro        # under 20 minutes on 2 cores
    scissorbench train-micro --backbone qwen2_5_vl --output checkpoints/micro_qwen2_5_vl

One recipe for both backbones; what differs is in `_LlavaParts` and `_QwenParts` (tower,
projector, positions). The micro Qwen2.5-VL samples 16 frames (8 temporal patches, 128 tokens);
its frozen tower is the patch embedding and vision blocks, its projector the 2x2 merger (the
window reordering undone, checked against the model's own `get_video_features`); its vision
targets cover each temporal patch (a colour counts if it is under the token in either frame);
and it trains with the full sequence's M-RoPE ids (`get_rope_index`) sliced at the kept tokens
under visual-token dropout, as its adapter's default `positions=original` feeds it. The
LLaVA-OneVision micro trains with plain positions 0..S-1 of the fed sequence, as its adapter's
default `positions=contiguous`.

Deterministic from `seed` on a given machine and thread count. The steps:

1. **Data.** Write the `train` split of `synthetic.task` (seed 1, an independent draw
   from the held-out `test` split, seed 0) as mp4 files and read them back exactly as
   evaluation does: `harness.video.sample_frames` (8 uniform frames), then the
   checkpoint's own video processor.
2. **Model.** Train the tokenizer on the task's wording and initialise the model
   (`synthetic.micro.new_micro_model`).
3. **Vision pre-training** (`pretrain_vision`). The vision tower and projector learn to name
   the colours and shape kinds under each pooled token (`region_labels`, read off the frames)
   through a linear probe that is then discarded. LLaVA starts from a pretrained SigLIP; this
   is the stand-in: without it, open answers stayed at the level of guessing from the
   question (about 20%) for 350 steps; with it they passed 50% by step 200.
4. **Instruction tuning.** The tower is frozen (as in LLaVA's instruction tuning), its
   features computed once (`tower_features`); projector, pooling and LLM train with AdamW on
   the answer tokens of sequences laid out by the adapter's own `split_prompt` (prompt before
   the video, the visual tokens, the rest of the prompt, the answer, `<|im_end|>`). Two forms
   of each question (`_Sequences`): multiple choice (the options listed, as evaluated) and
   open (the question alone, as LLaVA's data mixes short answers with multiple choice). Both
   are answered with the right option's text ("red", "the blue circle"), which the task's
   scorer maps to its letter (`synthetic.task.extract_letter`). Answering with the
   letter means finding the answer among the options and copying the letter two tokens
   before it; measured here, the model trained from scratch was still near chance on that
   (about 30%) after 550 steps, and a text-only drill of it reached about 55% after 400 steps
   of 64 dialogues: it does not fit the 20-minute budget.
   Visual-token dropout: in a share `token_dropout` of the sequences a random subset (5-100%)
   of the visual tokens is kept, in order. Real video LLMs see visual inputs of many lengths
   in training (images, videos, resolutions); a model trained on one fixed length treats any
   shorter input as out of distribution and every compressor fails alike. Random subsets
   favour no compressor's choice of tokens.
5. **Output.** The checkpoint (safetensors + processor) and `training.json`: settings, loss
   curve, held-out accuracy of greedy answers through `backbones.load` (the shipped path).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["TrainConfig", "load_split", "train"]


@dataclass
class TrainConfig:
    """Settings of one training run (all of them go into training.json)."""

    seed: int = 0
    train_items: int = 6000  # synthetic.task.TRAIN_ITEMS
    steps: int = 2500
    batch_size: int = 16
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.01
    token_dropout: float = 0.25
    open_share: float = 0.3
    vision_steps: int = 400
    vision_batch: int = 16
    frames: int = 8
    threads: int = 2
    eval_items: int = 140
    backbone: str = "llava_onevision"  # or "qwen2_5_vl" (BACKBONES)

    @classmethod
    def for_backbone(cls, backbone: str, **changes: Any) -> TrainConfig:
        """The defaults of `backbone`'s micro model: Qwen2.5-VL samples 16 frames (8 temporal
        patches of 2, 128 tokens, as the LLaVA micro's 8 frames x 16 tokens)."""
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, got {backbone!r}")
        frames = {"llava_onevision": 8, "qwen2_5_vl": 16}[backbone]
        return cls(**{"backbone": backbone, "frames": frames, **changes})


def load_split(root: Path, split: str, frames: int, processor: Any,
               limit: int | None = None) -> tuple[list[dict], Any]:
    """(index rows, pixel values [N, T, 3, S, S]) of the first `limit` items of a split (all
    when None), decoded as evaluation decodes (LLaVA-OneVision's processor)."""
    rows, pixels, _ = _decode(root, split, frames, _LlavaParts.pixels_of(processor), limit)
    return rows, pixels


def _decode(root: Path, split: str, frames: int, pixels_of: Any, limit: int | None,
            keep_frames: bool = False) -> tuple[list[dict], Any, Any]:
    """(rows, pixel values stacked per video, the uint8 frames [N, T, S, S, 3] if asked)."""
    from harness.video import sample_frames
    from synthetic.task import read_split

    rows = read_split(root, split)[:limit]
    pixels, raw = [], []
    for start in range(0, len(rows), 64):
        videos = [sample_frames(root / r["video"], frames) for r in rows[start : start + 64]]
        pixels.append(pixels_of(videos))
        if keep_frames:
            raw.append(torch.from_numpy(np.stack(videos)))
    return rows, torch.cat(pixels), (torch.cat(raw) if keep_frames else None)


class _LlavaParts:
    """The micro LLaVA-OneVision's pieces of the recipe: SigLIP tower, projector + 2x2 pooling,
    a plain 1-D position per token (its adapter's default, `positions=contiguous`)."""

    name = "llava_onevision"

    def __init__(self, seed: int) -> None:
        from backbones.llava_onevision import LlavaOnevisionAdapter
        from synthetic.micro import new_micro_model

        self.model, self.processor = new_micro_model(seed)
        self.adapter = LlavaOnevisionAdapter(self.model, self.processor)
        self.tokens_per_frame = self.adapter.tokens_per_frame

    @staticmethod
    def pixels_of(processor: Any) -> Any:
        def pixels(videos: list[np.ndarray]) -> torch.Tensor:
            return processor.video_processor(videos=videos, return_tensors="pt")[
                "pixel_values_videos"]
        return pixels

    def load(self, root: Path, split: str, frames: int, limit: int | None) -> tuple:
        rows, pixels, _ = _decode(root, split, frames, self.pixels_of(self.processor), limit)
        grid = int(math.isqrt(self.tokens_per_frame))
        return rows, pixels, region_labels(rows, _siglip_rgb(pixels), grid)

    def tower_and_projector(self) -> list[torch.nn.Parameter]:
        inner = self.model.model
        return [*inner.vision_tower.parameters(), *inner.multi_modal_projector.parameters()]

    def video_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """The model's own visual tokens of pixels [B, T, 3, S, S] -> [B, T*N, D]."""
        feats = self.model.model.get_video_features(pixel_values_videos=pixels, return_dict=True)
        return feats.pooler_output[:, :-1]

    def freeze_tower(self) -> None:
        self.model.model.vision_tower.requires_grad_(False)

    def tower(self, pixels: torch.Tensor) -> torch.Tensor:
        return tower_features(self.model, pixels)

    def visual(self, tower: torch.Tensor) -> torch.Tensor:
        return visual_tokens(self.model, tower)

    def positions(self, before: int, after: int, keep: torch.Tensor | None,
                  tokens: int) -> None:
        return None  # the LLM's default 0..S-1

    def hidden(self, embeds: torch.Tensor, positions: list) -> torch.Tensor:
        return self.model.model.language_model(inputs_embeds=embeds,
                                               use_cache=False).last_hidden_state

    def load_trained(self, path: Path) -> Any:
        import backbones

        return backbones.load(str(path))


class _QwenParts:
    """The micro Qwen2.5-VL's pieces: patch embed + vision blocks as the frozen tower, the 2x2
    merger as the projector, and the full sequence's M-RoPE ids (`get_rope_index`) sliced at
    the kept visual tokens: its adapter's default, `positions=original`."""

    name = "qwen2_5_vl"

    def __init__(self, seed: int) -> None:
        from backbones.qwen2_5_vl import Qwen25VLAdapter
        from synthetic.micro import QWEN_PIXELS, new_micro_qwen2_5_vl

        self.model, self.processor = new_micro_qwen2_5_vl(seed)
        self.pixels_bound = QWEN_PIXELS
        self.adapter = Qwen25VLAdapter(self.model, self.processor, min_pixels=QWEN_PIXELS,
                                       max_pixels=QWEN_PIXELS)
        self.visual_model = self.model.model.visual
        self._merge = self.visual_model.spatial_merge_size
        self.grid_thw: torch.Tensor | None = None
        self._rope: dict[tuple[int, int], torch.Tensor] = {}

    def _pixels(self, videos: list[np.ndarray]) -> torch.Tensor:
        out = self.processor.video_processor(videos=videos, size=self.adapter.pixels,
                                             return_tensors="pt")
        grid = out["video_grid_thw"]
        if self.grid_thw is None:
            self.grid_thw = grid[:1]
        if not (grid == self.grid_thw).all():
            raise ValueError(f"training videos must share one grid, got {grid.unique(dim=0)}")
        return out["pixel_values_videos"].reshape(len(videos), -1, out[
            "pixel_values_videos"].shape[-1])

    def load(self, root: Path, split: str, frames: int, limit: int | None) -> tuple:
        rows, pixels, raw = _decode(root, split, frames, self._pixels, limit, keep_frames=True)
        t, h, w = (int(x) for x in self.grid_thw[0])
        self.tokens_per_frame = (h // self._merge) * (w // self._merge)
        temporal = raw.shape[1] // t
        labels = region_labels(rows, raw.float(), h // self._merge, temporal=temporal)
        return rows, pixels, labels

    def _grids(self, batch: int) -> torch.Tensor:
        return self.grid_thw.expand(batch, -1)

    def tower_and_projector(self) -> list[torch.nn.Parameter]:
        return list(self.visual_model.parameters())

    def video_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """The model's own visual tokens of pixels [B, P, C*2*p*p] -> [B, M, D]."""
        out = self.model.model.get_video_features(
            pixel_values_videos=pixels.flatten(0, 1), video_grid_thw=self._grids(len(pixels)),
            return_dict=True)
        return torch.stack(out.pooler_output)

    def freeze_tower(self) -> None:
        self.visual_model.patch_embed.requires_grad_(False)
        self.visual_model.blocks.requires_grad_(False)

    def tower(self, pixels: torch.Tensor, chunk: int = 64) -> torch.Tensor:
        """The last vision block's output of every video, merge units in row-major order:
        [N, M, merge^2, Dv], the merger's input (its window reordering undone)."""
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import get_vision_window_index

        visual, out = self.visual_model, []
        unit = self._merge**2
        for start in range(0, len(pixels), chunk):
            batch = pixels[start : start + chunk]
            grids = self._grids(len(batch))
            hidden = visual(batch.flatten(0, 1), grid_thw=grids).last_hidden_state
            window_index, _ = get_vision_window_index(
                grids, spatial_merge_size=self._merge, window_size=visual.window_size,
                patch_size=visual.patch_size, kwargs={})
            units = hidden.view(-1, unit, hidden.shape[-1])[torch.argsort(window_index)]
            out.append(units.view(len(batch), -1, unit, hidden.shape[-1]))
        return torch.cat(out)

    def visual(self, tower: torch.Tensor) -> torch.Tensor:
        b, m = tower.shape[:2]
        return self.visual_model.merger(tower.reshape(-1, tower.shape[-1])).view(b, m, -1)

    def _full_rope(self, before: int, after: int) -> torch.Tensor:
        """[3, S] M-RoPE ids of the uncompressed sequence (the adapter's own rule)."""
        if (before, after) not in self._rope:
            from backbones.base import Prepared

            t, h, w = (int(x) for x in self.grid_thw[0])
            m = self._merge
            prepared = Prepared(
                visual=torch.empty(0), frames=t, visual_tokens=t * (h // m) * (w // m),
                compressor=None, grid=(h // m, w // m),
                rope={"second_per_grid_t": self.adapter._temporal / self.adapter._default_fps()},
            )
            self._rope[(before, after)] = self.adapter.full_positions(prepared, before, after)[0]
        return self._rope[(before, after)]

    def positions(self, before: int, after: int, keep: torch.Tensor | None,
                  tokens: int) -> torch.Tensor:
        full = self._full_rope(before, after)
        if keep is None:
            return full
        visual = full[:, before : before + tokens][:, keep]
        return torch.cat([full[:, :before], visual, full[:, before + tokens :]], dim=1)

    def hidden(self, embeds: torch.Tensor, positions: list) -> torch.Tensor:
        width = embeds.shape[1]
        ids = torch.stack([F.pad(p, (0, width - p.shape[1])) for p in positions], dim=1)
        return self.model.model.language_model(inputs_embeds=embeds, position_ids=ids,
                                               use_cache=False).last_hidden_state

    def load_trained(self, path: Path) -> Any:
        import backbones

        return backbones.load(str(path), min_pixels=self.pixels_bound,
                              max_pixels=self.pixels_bound)


BACKBONES = {"llava_onevision": _LlavaParts, "qwen2_5_vl": _QwenParts}


class _Sequences:
    """Token ids around the video for every row, in two forms: `mc` (the options listed, as
    evaluated) and `open` (the question alone); the answer is the right option's text ("red",
    "the blue circle") in both. Each a tuple (before, after + answer, answer length)."""

    def __init__(self, adapter: Any, rows: list[dict]) -> None:
        from synthetic.task import format_open_prompt, format_prompt

        end = adapter.tokenizer.convert_tokens_to_ids("<|im_end|>")

        def form(prompt: str, answer_text: str) -> tuple[list[int], list[int], int]:
            before, after = adapter.split_prompt(prompt)
            answer = adapter.encode_text(answer_text) + [end]
            return adapter.encode_text(before), adapter.encode_text(after) + answer, len(answer)

        self.items = []
        for row in rows:
            text = row["options"][row["answer_index"]]
            self.items.append({
                "mc": form(format_prompt(row["question"], row["options"]), text),
                "open": form(format_open_prompt(row["question"]), text),
            })


def tower_features(model: Any, pixels: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """The frozen vision tower's selected layer for every training video, computed once:
    [N, T, P, Dv] (P patches per frame), the input of the projector."""
    inner = model.model
    layer = inner.config.vision_feature_layer
    out = []
    for start in range(0, len(pixels), chunk):
        batch = pixels[start : start + chunk]
        n, t = batch.shape[:2]
        hidden = inner.vision_tower(batch.flatten(0, 1), output_hidden_states=True).hidden_states
        out.append(hidden[layer].reshape(n, t, *hidden[layer].shape[1:]))
    return torch.cat(out)


def visual_tokens(model: Any, tower: torch.Tensor) -> torch.Tensor:
    """Projector and the model's 2x2 pooling on tower features [B, T, P, Dv] -> [B, T*N, D]:
    `get_video_features` after its tower, without the trailing newline."""
    inner = model.model
    b, t = tower.shape[:2]
    pooled = inner.apply_pooling(inner.multi_modal_projector(tower.flatten(0, 1)))
    return pooled.reshape(b, t * pooled.shape[1], -1)


def _batch_loss(parts: Any, seqs: _Sequences, tower: torch.Tensor, index: list[int],
                keep: list[torch.Tensor | None], forms: list[str]) -> tuple[torch.Tensor, list]:
    """(mean cross-entropy of the answer tokens of the sequences `index` in `forms`, whether
    each sequence's answer is its greedy continuation)."""
    model = parts.model
    embed = model.model.language_model.embed_tokens
    video = parts.visual(tower[index])  # [B, T*N, D]
    tokens = video.shape[1]
    rows, targets, where, positions = [], [], [], []
    for b, i in enumerate(index):
        before, after, answer = seqs.items[i][forms[b]]
        visual = video[b] if keep[b] is None else video[b, keep[b]]
        ids_a = torch.tensor(after)
        rows.append(torch.cat([embed(torch.tensor(before)), visual, embed(ids_a)]))
        positions.append(parts.positions(len(before), len(after), keep[b], tokens))
        length = rows[-1].shape[0]
        # position p predicts token p + 1: the answer's tokens are the last `answer` ones
        where.append(torch.arange(length - answer - 1, length - 1))
        targets.append(ids_a[-answer:])
    width = max(r.shape[0] for r in rows)
    padded = torch.stack([F.pad(r, (0, 0, 0, width - r.shape[0])) for r in rows])
    hidden = parts.hidden(padded, positions)
    picked = torch.cat([hidden[b, w] for b, w in enumerate(where)])
    logits = model.lm_head(picked)
    target = torch.cat(targets)
    hits = (logits.argmax(-1) == target).split([len(t) for t in targets])
    return F.cross_entropy(logits.float(), target), [bool(h.all()) for h in hits]


def _keep_masks(rng: random.Random, batch: int, tokens: int, share: float) -> list:
    """Per sequence: None (all visual tokens) or the sorted indices of a random subset."""
    masks = []
    for _ in range(batch):
        if rng.random() >= share:
            masks.append(None)
            continue
        count = max(1, round(tokens * rng.uniform(0.05, 1.0)))
        masks.append(torch.tensor(sorted(rng.sample(range(tokens), count))))
    return masks


def _siglip_rgb(pixels: torch.Tensor) -> torch.Tensor:
    """LLaVA-OneVision pixel values [N, T, 3, S, S] (SigLIP's 0.5 / 0.5 normalisation) back to
    RGB levels [N, T, S, S, 3] in 0..255."""
    return ((pixels.float() * 0.5 + 0.5) * 255).permute(0, 1, 3, 4, 2)


def region_labels(rows: list[dict], rgb: torch.Tensor, grid: int,
                  temporal: int = 1) -> torch.Tensor:
    """Dense targets of the vision pre-training: for each pooled token (a `grid` x `grid` cell
    of each frame, or of each group of `temporal` frames: a Qwen temporal patch), which of the
    6 colours and which of the 4 shape kinds cover at least two of its pixels (in any frame of
    the group), and the cell's row and column -> float [N, T / temporal * grid^2, 10 + 2 grid].
    Read off the frames `rgb` [N, T, S, S, 3] (levels 0..255; nearest palette colour per pixel)
    and the items' shape lists (colour -> kind); the position makes "where" as easy to read
    from a token as "what"."""
    from synthetic.task import BACKGROUND, COLOURS, SHAPES, make_item

    palette = torch.tensor([BACKGROUND, *COLOURS.values()], dtype=torch.float32)
    colour_names = list(COLOURS)
    out = []
    for start in range(0, len(rows), 64):
        chunk = rgb[start : start + 64].float()
        n, frames, size = chunk.shape[:3]
        nearest = torch.cdist(chunk.reshape(-1, 3), palette).argmin(-1)
        nearest = nearest.reshape(n * frames, size, size)
        onehot = F.one_hot(nearest, len(palette)).permute(0, 3, 1, 2).float()[:, 1:]
        cell = size // grid
        colours = (F.avg_pool2d(onehot, cell) * cell * cell >= 2).float()  # [n*T, 6, g, g]
        t = frames // temporal
        colours = colours.reshape(n, t, temporal, len(COLOURS), grid * grid).amax(dim=2)
        kinds = torch.zeros(n, t, len(SHAPES), grid * grid)
        for b, row in enumerate(rows[start : start + 64]):
            for shape in make_item(row["seed"], row["index"]).shapes:
                c, k = colour_names.index(shape.colour), SHAPES.index(shape.kind)
                kinds[b, :, k] = torch.maximum(kinds[b, :, k], colours[b, :, c])
        cells = torch.arange(grid * grid)
        where = torch.cat([F.one_hot(cells // grid, grid), F.one_hot(cells % grid, grid)], 1)
        where = where.T.float().expand(n, t, 2 * grid, grid * grid)
        labels = torch.cat([colours, kinds, where], dim=2)  # [n, t, 10 + 2g, g*g]
        out.append(labels.permute(0, 1, 3, 2).reshape(n, t * grid * grid, -1))
    return torch.cat(out)


def pretrain_vision(parts: Any, pixels: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig,
                    log: Any) -> None:
    """Stage 1: the vision tower and projector learn to say what covers each pooled token
    (`region_labels`), through a linear probe that is then thrown away. LLaVA starts from a
    pretrained SigLIP; this is the micro model's stand-in, seconds instead of GPU-years."""
    probe = torch.nn.Linear(parts.model.config.text_config.hidden_size, labels.shape[-1])
    params = [*parts.tower_and_projector(), *probe.parameters()]
    optimiser = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(cfg.seed)
    for step in range(cfg.vision_steps):
        index = torch.randint(len(pixels), (cfg.vision_batch,), generator=generator)
        logits = probe(parts.video_features(pixels[index]))
        loss = F.binary_cross_entropy_with_logits(logits, labels[index])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if (step + 1) % 50 == 0 or step + 1 == cfg.vision_steps:
            hit = ((logits > 0) == (labels[index] > 0.5)).all(-1).float().mean()
            log(f"[train-micro] vision step {step + 1}/{cfg.vision_steps} loss {loss.item():.4f} "
                f"tokens fully right {hit.item():.3f}")


def _schedule(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak learning rate."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def held_out_accuracy(path: Path, root: Path, items: int, frames: int,
                      parts: Any = None) -> dict[str, float]:
    """Greedy answers of the saved checkpoint (through `backbones.load`, with the loading
    settings of its backbone's `parts`) on the first `items` test questions -> accuracy
    overall and per question type."""
    import backbones
    from harness.video import sample_frames
    from synthetic.task import accuracy_by_type, format_prompt, is_right, read_split

    llm = parts.load_trained(path) if parts is not None else backbones.load(str(path))
    outcomes = []
    for row in read_split(root, "test")[:items]:
        prepared = llm.prepare(sample_frames(root / row["video"], frames))
        text, _ = llm.generate(prepared, format_prompt(row["question"], row["options"]),
                               max_new_tokens=4)
        outcomes.append((row["question_type"], is_right(text, row)))
    return accuracy_by_type(outcomes)


def _ensure_splits(root: Path, cfg: TrainConfig, log: Any) -> None:
    """Write the train split (and the held-out test split) unless they are current."""
    from synthetic.task import SPLIT_SEEDS, TEST_ITEMS, build_dataset, split_is_current

    if not split_is_current(root, "train", SPLIT_SEEDS["train"], cfg.train_items):
        log(f"[train-micro] writing {cfg.train_items} training videos to {root}")
        build_dataset(root, n=cfg.train_items, seed=SPLIT_SEEDS["train"], split="train")
    if not split_is_current(root, "test", SPLIT_SEEDS["test"], cfg.eval_items):
        build_dataset(root, n=max(cfg.eval_items, TEST_ITEMS), seed=SPLIT_SEEDS["test"],
                      split="test")


def _optimiser(model: Any, cfg: TrainConfig) -> tuple[Any, Any, list[torch.Tensor]]:
    """AdamW over the trainable parameters (no decay on vectors), its schedule, the params."""
    trained = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trained if p.dim() >= 2]
    other = [p for p in trained if p.dim() < 2]
    optimiser = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": other,
                                                               "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.98),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: _schedule(s, cfg))
    return optimiser, scheduler, trained


def _instruction_tune(parts: Any, seqs: _Sequences, tower: torch.Tensor, rows: list[dict],
                      tokens: int, cfg: TrainConfig, log: Any) -> list[float]:
    """Train projector and LLM on the questions (tower frozen); the loss of every step."""
    rng = random.Random(cfg.seed)
    optimiser, scheduler, trained = _optimiser(parts.model, cfg)
    order: list[int] = []
    curve = []
    recent: dict[str, list[bool]] = {"mc": [], "open": []}
    by_type: dict[str, list[bool]] = {}
    started = time.perf_counter()
    for step in range(cfg.steps):
        if len(order) < cfg.batch_size:
            order += rng.sample(range(len(rows)), len(rows))
        index, order = order[: cfg.batch_size], order[cfg.batch_size :]
        keep = _keep_masks(rng, len(index), tokens, cfg.token_dropout)
        forms = ["open" if rng.random() < cfg.open_share else "mc" for _ in index]
        loss, hits = _batch_loss(parts, seqs, tower, index, keep, forms)
        for i, form, hit in zip(index, forms, hits, strict=True):
            recent[form].append(hit)
            by_type.setdefault(rows[i]["question_type"], []).append(hit)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        optimiser.step()
        scheduler.step()
        curve.append(loss.item())
        if (step + 1) % 50 == 0 or step + 1 == cfg.steps:
            spent = time.perf_counter() - started
            eta = spent / (step + 1) * (cfg.steps - step - 1)
            right = " ".join(f"{form} {np.mean(v[-800:]):.2f}" for form, v in recent.items() if v)
            kinds = " ".join(f"{k} {np.mean(v[-200:]):.2f}" for k, v in by_type.items())
            log(f"[train-micro] step {step + 1}/{cfg.steps} loss {np.mean(curve[-50:]):.4f} "
                f"train accuracy {right} ({kinds})  ({spent:.0f} s, about {eta:.0f} s left)")
    return curve


def train(output: str | os.PathLike, cfg: TrainConfig | None = None, *,
          data_root: str | os.PathLike | None = None, log: Any = print) -> Path:
    """Train the micro model of `cfg.backbone` as the module docstring says; save it to
    `output`; return it."""
    from backbones.tiny import save_checkpoint
    from synthetic.task import SPLIT_SEEDS, dataset_dir

    cfg = cfg or TrainConfig()
    if cfg.backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, got {cfg.backbone!r}")
    torch.set_num_threads(cfg.threads)
    clock = time.perf_counter()
    root = dataset_dir(data_root)
    _ensure_splits(root, cfg, log)
    parts = BACKBONES[cfg.backbone](cfg.seed)
    model, processor = parts.model, parts.processor
    rows, pixels, labels = parts.load(root, "train", cfg.frames, cfg.train_items)
    seqs = _Sequences(parts.adapter, rows)
    log(f"[train-micro] {parts.name}: {len(rows)} videos ready in "
        f"{time.perf_counter() - clock:.0f} s; "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")

    torch.manual_seed(cfg.seed)
    model.train()
    pretrain_vision(parts, pixels, labels, cfg, log)
    parts.freeze_tower()
    tower = parts.tower(pixels)
    with torch.no_grad():  # the split computation is the model's own, to the last bit
        own = parts.video_features(pixels[:2])
        torch.testing.assert_close(parts.visual(tower[:2]), own)
    del pixels, labels
    tokens = own.shape[1]  # visual tokens per video
    curve = _instruction_tune(parts, seqs, tower, rows, tokens, cfg, log)
    model.eval()
    path = save_checkpoint(model, processor, output)
    accuracy = held_out_accuracy(path, root, cfg.eval_items, cfg.frames, parts)
    log(f"[train-micro] held-out accuracy (first {cfg.eval_items} test items): "
        + ", ".join(f"{k} {v:.3f}" for k, v in accuracy.items()))
    report = {
        "config": asdict(cfg),
        "train_split": {"seed": SPLIT_SEEDS["train"], "items": len(rows)},
        "loss_every_50_steps": [float(np.mean(curve[i : i + 50]))
                                for i in range(0, len(curve), 50)],
        "held_out_accuracy": accuracy,
        "seconds": time.perf_counter() - clock,
        "torch": torch.__version__,
    }
    (path / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    return path
