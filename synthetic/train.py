"""Train the micro video-LLM (`synthetic.micro`) on the synthetic video QA, on the CPU.

    scissorbench train-micro --output checkpoints/micro        # under 20 minutes on 2 cores

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


def load_split(root: Path, split: str, frames: int, processor: Any,
               limit: int | None = None) -> tuple[list[dict], Any]:
    """(index rows, pixel values [N, T, 3, S, S]) of the first `limit` items of a split (all
    when None), decoded as evaluation decodes."""
    from harness.video import sample_frames
    from synthetic.task import read_split

    rows = read_split(root, split)[:limit]
    pixels = []
    for start in range(0, len(rows), 64):
        videos = [sample_frames(root / r["video"], frames) for r in rows[start : start + 64]]
        out = processor.video_processor(videos=videos, return_tensors="pt")
        pixels.append(out["pixel_values_videos"])
    return rows, torch.cat(pixels)


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


def _batch_loss(model: Any, seqs: _Sequences, tower: torch.Tensor, index: list[int],
                keep: list[torch.Tensor | None], forms: list[str]) -> tuple[torch.Tensor, list]:
    """(mean cross-entropy of the answer tokens of the sequences `index` in `forms`, whether
    each sequence's answer is its greedy continuation)."""
    inner = model.model
    embed = inner.language_model.embed_tokens
    video = visual_tokens(model, tower[index])  # [B, T*N, D]
    rows, targets, where = [], [], []
    for b, i in enumerate(index):
        before, after, answer = seqs.items[i][forms[b]]
        visual = video[b] if keep[b] is None else video[b, keep[b]]
        ids_a = torch.tensor(after)
        rows.append(torch.cat([embed(torch.tensor(before)), visual, embed(ids_a)]))
        length = rows[-1].shape[0]
        # position p predicts token p + 1: the answer's tokens are the last `answer` ones
        where.append(torch.arange(length - answer - 1, length - 1))
        targets.append(ids_a[-answer:])
    width = max(r.shape[0] for r in rows)
    padded = torch.stack([F.pad(r, (0, 0, 0, width - r.shape[0])) for r in rows])
    hidden = inner.language_model(inputs_embeds=padded, use_cache=False).last_hidden_state
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


def region_labels(rows: list[dict], pixels: torch.Tensor, grid: int) -> torch.Tensor:
    """Dense targets of the vision pre-training: for each pooled token (a `grid` x `grid` cell
    of each frame), which of the 6 colours and which of the 4 shape kinds cover at least two of
    its pixels, and the cell's row and column -> float [N, T * grid^2, 10 + 2 grid]. Read off
    the decoded frames (nearest palette colour per pixel) and the items' shape lists (colour ->
    kind); the position makes "where" as easy to read from a token as "what"."""
    from synthetic.task import BACKGROUND, COLOURS, SHAPES, make_item

    palette = torch.tensor([BACKGROUND, *COLOURS.values()], dtype=torch.float32)
    colour_names = list(COLOURS)
    out = []
    for start in range(0, len(rows), 64):
        chunk = pixels[start : start + 64]
        n, t, _, size, _ = chunk.shape
        rgb = ((chunk.float() * 0.5 + 0.5) * 255).permute(0, 1, 3, 4, 2)  # [n, T, S, S, 3]
        nearest = torch.cdist(rgb.reshape(-1, 3), palette).argmin(-1).reshape(n * t, size, size)
        onehot = F.one_hot(nearest, len(palette)).permute(0, 3, 1, 2).float()[:, 1:]
        cell = size // grid
        colours = (F.avg_pool2d(onehot, cell) * cell * cell >= 2).float()  # [n*T, 6, g, g]
        colours = colours.reshape(n, t, len(COLOURS), grid * grid)
        kinds = torch.zeros(n, t, len(SHAPES), grid * grid)
        for b, row in enumerate(rows[start : start + 64]):
            for shape in make_item(row["seed"], row["index"]).shapes:
                c, k = colour_names.index(shape.colour), SHAPES.index(shape.kind)
                kinds[b, :, k] = torch.maximum(kinds[b, :, k], colours[b, :, c])
        cells = torch.arange(grid * grid)
        where = torch.cat([F.one_hot(cells // grid, grid), F.one_hot(cells % grid, grid)], 1)
        where = where.T.float().expand(n, t, 2 * grid, grid * grid)
        labels = torch.cat([colours, kinds, where], dim=2)  # [n, T, 10 + 2g, g*g]
        out.append(labels.permute(0, 1, 3, 2).reshape(n, t * grid * grid, -1))
    return torch.cat(out)


def pretrain_vision(model: Any, pixels: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig,
                    log: Any) -> None:
    """Stage 1: the vision tower and projector learn to say what covers each pooled token
    (`region_labels`), through a linear probe that is then thrown away. LLaVA starts from a
    pretrained SigLIP; this is the micro model's stand-in, seconds instead of GPU-years."""
    inner = model.model
    probe = torch.nn.Linear(inner.config.text_config.hidden_size,
                            labels.shape[-1])
    params = [*inner.vision_tower.parameters(), *inner.multi_modal_projector.parameters(),
              *probe.parameters()]
    optimiser = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(cfg.seed)
    for step in range(cfg.vision_steps):
        index = torch.randint(len(pixels), (cfg.vision_batch,), generator=generator)
        feats = inner.get_video_features(pixel_values_videos=pixels[index], return_dict=True)
        logits = probe(feats.pooler_output[:, :-1])
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


def held_out_accuracy(path: Path, root: Path, items: int, frames: int) -> dict[str, float]:
    """Greedy answers of the saved checkpoint (through `backbones.load`) on the first `items`
    test questions -> accuracy overall and per question type."""
    import backbones
    from harness.video import sample_frames
    from synthetic.task import accuracy_by_type, format_prompt, is_right, read_split

    llm = backbones.load(str(path))
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


def _instruction_tune(model: Any, seqs: _Sequences, tower: torch.Tensor, rows: list[dict],
                      tokens: int, cfg: TrainConfig, log: Any) -> list[float]:
    """Train projector and LLM on the questions (tower frozen); the loss of every step."""
    rng = random.Random(cfg.seed)
    optimiser, scheduler, trained = _optimiser(model, cfg)
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
        loss, hits = _batch_loss(model, seqs, tower, index, keep, forms)
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
    """Train the micro model as the module docstring says; save it to `output`; return it."""
    from backbones.llava_onevision import LlavaOnevisionAdapter
    from backbones.tiny import save_checkpoint
    from synthetic.micro import new_micro_model
    from synthetic.task import SPLIT_SEEDS, dataset_dir

    cfg = cfg or TrainConfig()
    torch.set_num_threads(cfg.threads)
    clock = time.perf_counter()
    root = dataset_dir(data_root)
    _ensure_splits(root, cfg, log)
    model, processor = new_micro_model(cfg.seed)
    adapter = LlavaOnevisionAdapter(model, processor)
    rows, pixels = load_split(root, "train", cfg.frames, processor, limit=cfg.train_items)
    seqs = _Sequences(adapter, rows)
    log(f"[train-micro] {len(rows)} videos ready in {time.perf_counter() - clock:.0f} s; "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")

    torch.manual_seed(cfg.seed)
    model.train()
    grid = int(math.isqrt(adapter.tokens_per_frame))
    pretrain_vision(model, pixels, region_labels(rows, pixels, grid), cfg, log)
    model.model.vision_tower.requires_grad_(False)
    tower = tower_features(model, pixels)
    with torch.no_grad():  # the split computation is the model's own, to the last bit
        own = model.model.get_video_features(pixel_values_videos=pixels[:2], return_dict=True)
        torch.testing.assert_close(visual_tokens(model, tower[:2]), own.pooler_output[:, :-1])
    del pixels
    tokens = cfg.frames * adapter.tokens_per_frame
    curve = _instruction_tune(model, seqs, tower, rows, tokens, cfg, log)
    model.eval()
    path = save_checkpoint(model, processor, output)
    accuracy = held_out_accuracy(path, root, cfg.eval_items, cfg.frames)
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
