"""The lmms-eval model `scissorbench`: a video LLM with a visual-token compressor inside.

    TASKS=$(python -c "import harness; print(harness.tasks_dir())")
    lmms-eval --model scissorbench \\
        --model_args pretrained=PATH,compressor=scc,retention=0.35,max_frames_num=32 \\
        --tasks synthetic_video_qa --include_path "$TASKS" --output_path results/x --log_samples

Model arguments: `pretrained`, `compressor` (a registry name, default "none"), `retention`,
`max_frames_num` (32), `dtype` ("float32", "bfloat16", "float16" or "auto"; default float16
on CUDA, as lmms-eval's `llava_onevision` and the LLaVA-NeXT builder run, float32 on CPU),
`attn_implementation` ("sdpa"), `device` (default:
cuda:<local rank> when CUDA is available, else cpu), `video_newline` (False), `preprocess`
("llava_next": LLaVA-NeXT's SigLIP processor, PIL bicubic, as the official code; "hf":
transformers' processor; default by the checkpoint's layout, `backbones.load`), `positions`
(position ids after a pre-LLM compressor: "original" keeps the full sequence's, "contiguous"
renumbers the compressed sequence; default the backbone's reference, `backbones.load`),
`vision_head` (LLaVA only: the SigLIP checkpoint whose attention-pooling head gives FastVID's
`frame_features` / `head_attention`, e.g. google/siglip-so400m-patch14-384; loaded only when
the compressor asks for them; `backbones.siglip_head`),
`records_path` (a JSONL of per-request records, appended to; with several processes each rank
writes `<stem>.rank<r><suffix>`; it is also the journal a killed run resumes from: a request
whose record a model of the same `identity()` already wrote without error is answered from it,
not recomputed), `feature_cache` (a folder: vision features per video, shared
by every configuration of a sweep; `harness.feature_cache`), and any hyper-parameter of
the compressor (`tau=0.9`, `layer=3`, `merge=true`, ...). "true"/"false"/"none"/numbers are
parsed. The compressor is built (and its parameters validated) before the model loads, so a
typo fails at once with a ValueError.

Per request the model samples `max_frames_num` frames (the llava_onevision rule,
`np.linspace(0, n - 1, max_frames_num)` over all n frames) from whatever the task's
`doc_to_visual` gives: a video path, a frame folder, frame image paths or a list of PIL images
(`harness.video.parse_visual`), runs the backbone's vision tower and the compressor, then
the LLM. Each
request adds a record to `self.records` (and to `records_path`): doc id, task, visual tokens
N_v, tokens fed, tokens per decoder layer, achieved retention, prefill FLOPs and their ratio to
the uncompressed model (`harness.flops`, FastV convention over the real sequence, text
included; `prefill_flops_ratio_visual` counts visual tokens only, the paper's Table 5
convention), timings (video_decode, vision, compress, prefill, decode, the adapter's stages
timed by CUDA events on CUDA, `backbones.decoder._now`; and ttft, the time to first token,
measured on the host clock from the request's start, before its video is decoded, to the first
token's logits: about video_decode + vision + compress + prefill, which it spans), peak memory
and error.
A video that cannot be read (or a visual form it does not read, e.g. a dict) gives that
request an error record (its reason), an empty answer (generate_until) or an infinite loss
(loglikelihood); the run goes on, with the feature cache on too (a missing file is a cache
miss, then the decoder's error). Rank 0 shows a tqdm progress bar per request list.

Protocol of lmms-eval 0.7.3's `llava_onevision`, followed here: `max_new_tokens` 1024 when a
task gives none, the task's `until` ignored (decoding ends at `<|im_end|>`; `honour_until=true`
applies it, as lmms-eval's generation contract asks of models); loglikelihood
scores the continuation as the assistant's message plus the end of turn `<|im_end|>\\n`, and
the loss is the mean over those tokens.

lmms-eval 0.7.3 details this relies on (read from its code):
- requests carry (context, gen_kwargs or continuation, doc_to_visual, doc_id, task, split);
  the doc is `self.task_dict[task][split][doc_id]`; the video tasks scissorbench supports
  give `[video_path]` (the request metadata carries the task's `metadata:` keys).
- multiple-choice scoring takes the argmin over choices: loglikelihood returns a loss
  (the mean negative log-probability of the scored tokens) and is_greedy.
- the evaluator passes every model output through `unwrap_generation_output`, which turns a
  plain (loss, is_greedy) tuple into its str() (and multiple_choice scoring then fails);
  wrapping the pair in a GenerationResult keeps it a pair (and carries the token counts). The
  pair is a `Choice` (a NamedTuple with a `strip()`), because the response cache (`use_cache`)
  calls `.text.strip()` on every GenerationResult; a failed request strips to "" and is not
  cached. Pairs served from that cache come back as str(list) in 0.7.3 whatever the model
  returns; the synthetic_video_qa_mc scorer parses that form too.
- the response cache keys a model instance by `str(model)` (`ResponseCache.create`), so the
  model's repr is its settings (`identity`), the same in every process: a rerun in a new
  process is served from the cache. It stores a request list's answers only after the model
  returns the whole list (`ResponseCache.execute`; one list per request type, all tasks of a
  `simple_evaluate` call together), and a killed run's entries live in its own
  `runs/<run id>/` until it finishes (`LMMS_CACHE_RUN_ID` fixes the id): finished calls
  resume, a call killed midway is recomputed.
- data parallel: lmms-eval gives each rank its shard of documents and gathers the per-rank
  results; the model only needs `_rank`, `_world_size` and `device`. Ranks with fewer
  documents get padding clones of their last request (metadata `__padding_only__`), whose
  results are thrown away: the model skips them. On CPU, launch with
  torchrun and `distributed_executor_backend="torchrun"` (accelerate sees one process there).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

import torch
from lmms_eval.api.instance import GenerationResult, Instance, TokenCounts
from lmms_eval.api.model import lmms
from tqdm import tqdm

import compressors
from backbones import DTYPES, check_positions
from backbones.preprocess import check_preprocess
from harness.environment import warn_drift
from harness.feature_cache import FeatureCache, content_key
from harness.flops import prefill_flops
from harness.video import VideoError, Visual, check_frame_count, parse_visual, sample_visual

__all__ = ["Choice", "ScissorBench", "VisualTokenCounts", "manifest", "parse_value"]

log = logging.getLogger("scissorbench")

# lmms-eval 0.7.3 llava_onevision: max_new_tokens when a task gives none; the end of an
# assistant turn in the qwen_2 conversation (LLaVA-NeXT `conv_qwen`, CHATML: sep + "\n"),
# which its loglikelihood scores after the continuation; lmms-eval's default `until`.
_DEFAULT_MAX_NEW_TOKENS = 1024
_END_OF_TURN = "<|im_end|>\n"
_DEFAULT_UNTIL = "\n\n"


def manifest():
    """Entry point of the `lmms_eval.models` group: `--model scissorbench`."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(
        model_id="scissorbench", simple_class_path="harness.lmms_model.ScissorBench"
    )


def parse_value(value: Any) -> Any:
    """A model-arg value from the command line: true/false/none/null, int, float, else as is."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null", ""):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


class Choice(NamedTuple):
    """A loglikelihood answer: loss = mean -log p over the continuation and the end of the
    assistant turn (as lmms-eval's llava_onevision), and whether greedy decoding would produce
    them."""

    loss: float
    is_greedy: bool

    def strip(self) -> str:
        """Truthy when the answer is real (lmms-eval's cache stores only those)."""
        return "ok" if math.isfinite(self.loss) else ""


_FAILED = Choice(math.inf, False)


@dataclass
class VisualTokenCounts(TokenCounts):
    """TokenCounts plus the visual-token facts, so they land in lmms-eval's samples log."""

    visual_tokens: int | None = None
    visual_tokens_fed: int | None = None
    achieved_retention: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = super().to_dict()
        for name in ("visual_tokens", "visual_tokens_fed", "achieved_retention"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


def _is_padding(request: Instance) -> bool:
    """lmms-eval pads short ranks with clones of their last request so every rank runs the same
    number of requests; their results are discarded, so they are neither computed nor recorded."""
    return bool((request.metadata or {}).get("__padding_only__"))


def _info(prepared: Any) -> dict[str, Any]:
    """The compressor's facts for one video (SCC: the tau used; PLLaVA: the pooled grid)."""
    info = getattr(prepared, "info", None) or {}
    return {k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in info.items()}


def _encoded(features: Any, signals: dict[str, Any], need: tuple[str, ...]) -> tuple:
    """`prepare`'s `encoded=` from a cached encoding: (features, importance or None) when the
    compressor needs nothing but the importance (the form every adapter reads), else
    (features, {name: signal})."""
    if set(need) <= {"importance"}:
        return features, signals.get("importance")
    return features, signals


def _digest(value: Any) -> str:
    """16 hex digits of the SHA-256 of `value`'s canonical JSON."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read_journal(records_path: str | None, identity: str) -> dict[str, dict[str, Any]]:
    """{request key: record} of the finished requests in the records files of every rank
    (`<stem>*<suffix>`) that this model identity wrote: what a killed run already computed.
    Lines cut short by a kill, failed samples and other identities are left out."""
    if not records_path:
        return {}
    base = Path(records_path)
    journal: dict[str, dict[str, Any]] = {}
    for path in sorted(base.parent.glob(f"{base.stem}*{base.suffix}")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if (isinstance(record, dict) and record.get("identity") == identity
                    and record.get("error") is None and record.get("request_key")):
                journal[record["request_key"]] = record
    return journal


def _counts_of(record: dict[str, Any]) -> VisualTokenCounts:
    """The token counts of a journaled answer, as `_token_counts` gave them."""
    return VisualTokenCounts(
        input_tokens=int(record["prompt_tokens"]),
        output_tokens=int(record.get("generated_tokens") or 0),
        visual_tokens=int(record["visual_tokens"]),
        visual_tokens_fed=int(record["visual_tokens_fed"]),
        achieved_retention=float(record["achieved_retention"]),
    )


def _ttft(acc: Any, requested: float) -> dict[str, float]:
    """{"ttft": seconds}, the time to first token measured on the host clock (not a sum of
    stages): from `requested` (`time.perf_counter()` before the request's video is decoded) to
    the adapter's `first_logits_at` (its first token's logits computed); {} when the adapter
    does not say when that was."""
    ready = getattr(acc, "first_logits_at", None)
    return {} if ready is None else {"ttft": float(ready) - requested}


def _flag(name: str, value: Any) -> bool:
    """A true/false model argument (command-line strings parsed), else ValueError."""
    value = parse_value(value)
    if value not in (True, False):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return bool(value)


def _dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) of this process, from torch.distributed or the env."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    else:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    return rank, world, int(os.environ.get("LOCAL_RANK", 0))


def _resolve_device(device: str | None, world: int, local_rank: int) -> torch.device:
    if device is None or device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = torch.device(device)
    if resolved.type == "cuda" and (world > 1 or resolved.index is None):
        resolved = torch.device("cuda", local_rank if world > 1 else 0)
    return resolved


class ScissorBench(lmms):
    """lmms-eval simple model: a `backbones` video LLM with a `compressors` method inside."""

    is_simple = True

    def __init__(
        self,
        pretrained: str | None = None,
        compressor: str = "none",
        retention: float | str | None = None,
        max_frames_num: int | str = 32,
        dtype: str | None = None,
        attn_implementation: str = "sdpa",
        device: str | None = None,
        video_newline: bool | str = False,
        preprocess: str | None = None,
        positions: str | None = None,
        min_pixels: int | str | None = None,
        max_pixels: int | str | None = None,
        vision_head: str | None = None,
        honour_until: bool | str = False,
        records_path: str | None = None,
        feature_cache: str | None = None,
        batch_size: int | str | None = 1,
        max_batch_size: int | None = None,
        **compressor_params: Any,
    ) -> None:
        super().__init__()
        # 1. Validate everything that needs no model, so a bad argument fails in a second.
        if not pretrained or not isinstance(pretrained, str):
            raise ValueError("scissorbench needs pretrained=<checkpoint path or hub id>")
        self._build_compressor(str(compressor).strip(), parse_value(retention), compressor_params)
        self.max_frames_num = check_frame_count(parse_value(max_frames_num), "max_frames_num")
        dtype = parse_value(dtype)
        if dtype is not None and dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        preprocess = check_preprocess(parse_value(preprocess))
        positions = check_positions(parse_value(positions))
        video_newline = _flag("video_newline", video_newline)
        self.honour_until = _flag("honour_until", honour_until)
        batch_size = parse_value(batch_size) if batch_size is not None else 1
        if batch_size != 1:
            raise ValueError(
                f"scissorbench runs batch size 1 (the paper's setting), got {batch_size!r}"
            )
        # 2. Processes and the device; 3. the records file; 4. the model, last.
        self._join_processes(parse_value(device), dtype)
        self.records: list[dict[str, Any]] = []
        self.records_path = self._rank_path(records_path) if records_path else None
        if self.records_path is not None:  # appended to: a resumed run keeps earlier records
            self.records_path.parent.mkdir(parents=True, exist_ok=True)
        pixels = {"min_pixels": parse_value(min_pixels), "max_pixels": parse_value(max_pixels)}
        self.vision_head = parse_value(vision_head)
        self._load_model(pretrained, attn_implementation, video_newline, preprocess, positions,
                         feature_cache, pixels)
        self._identity_key = _digest(self.identity())
        self._journal = _read_journal(records_path, self._identity_key)
        self.resumed = 0  # requests answered from the journal in this process
        self._full_flops: dict[tuple[int, int], int] = {}
        self._prepared_key: tuple | None = None
        self._prepared: Any = None
        self._prepared_path = ""
        self._warned: set[str] = set()
        self._stamp_key: tuple | None = None
        self._stamp_value: list | None = None

    def _build_compressor(self, name: str, retention: Any, raw: dict[str, Any]) -> None:
        """The compressor with its parameters parsed and validated (before any model loads)."""
        params = {k: parse_value(v) for k, v in raw.items()}
        if retention is not None:
            params["retention"] = retention
        try:
            self.compressor = compressors.build(name, **params)
        except ValueError as err:
            raise ValueError(f"scissorbench model_args: {err}") from err
        self.compressor_name = name
        self.retention = self.compressor.params.get("retention")

    def _join_processes(self, device: str | None, dtype: str | None) -> None:
        """Rank, world size and device (lmms-eval shards documents by rank; we only report
        where we are); the dtype default for that device; the process group if several."""
        rank, world, local_rank = _dist_info()
        self._rank, self._world_size = rank, world
        self._device = _resolve_device(device, world, local_rank)
        if self._device.type == "cuda":
            torch.cuda.set_device(self._device)
        # lmms-eval's llava_onevision and the LLaVA-NeXT builder run the model in float16
        # (`.half()`) on CUDA; CPUs have no fast float16, so float32 there.
        self.dtype = dtype or ("float16" if self._device.type == "cuda" else "float32")
        warn_drift()
        if (
            world > 1
            and torch.distributed.is_available()
            and not torch.distributed.is_initialized()
        ):
            backend = "nccl" if self._device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(backend=backend, timeout=timedelta(hours=12))

    def _load_model(
        self,
        pretrained: str,
        attn_implementation: str,
        video_newline: bool,
        preprocess: str | None,
        positions: str | None,
        feature_cache: str | None,
        pixels: dict[str, int | None] | None = None,
    ) -> None:
        """The backbone (`backbones.load`) and, if asked, the sweep's feature cache, keyed by
        everything that changes the features: checkpoint, weights, dtype, preprocessing."""
        import backbones

        self.pretrained = pretrained
        self.attn_implementation, self.video_newline = attn_implementation, video_newline
        self.weights_fingerprint = backbones.fingerprint(pretrained)
        head = self.vision_head
        self.head_fingerprint = backbones.fingerprint(head) if head else None
        self.llm = backbones.load(
            pretrained,
            dtype=self.dtype,
            device=str(self._device),
            attn_implementation=attn_implementation,
            video_newline=video_newline,
            preprocess=preprocess,
            positions=positions,
            vision_head=self.vision_head,
            **(pixels or {}),
        )
        self._check_in_llm_layer()
        if self.compressor_name != "none" and hasattr(self.llm, "check_signals"):
            self.llm.check_signals(self.compressor)  # e.g. fastvid without vision_head: now
        model_id = f"{pretrained}|{self.weights_fingerprint}|{self.dtype}|{self.llm.preprocess}"
        if getattr(self.llm, "pixels", None):  # Qwen-VL: the resize bounds change the features
            model_id += f"|{self.llm.pixels['shortest_edge']}-{self.llm.pixels['longest_edge']}"
        if self._reads_head():  # its entries hold the head's signals: never another head's
            model_id += f"|head={self.vision_head}|{self.head_fingerprint}"
        self.features = (
            FeatureCache(feature_cache, model_id, self.max_frames_num) if feature_cache else None
        )

    def _check_in_llm_layer(self) -> None:
        """An in-LLM method's layer K must leave layers after it (1 <= K < L): fail now, not
        on the first request."""
        if self.compressor.stage != "in_llm":
            return
        name = self.compressor_name
        layer = self.compressor.params.get("layer", compressors.defaults(name).get("layer"))
        if layer is not None and not 1 <= int(layer) < self.llm.num_layers:
            raise ValueError(
                f"{name} layer={layer} must be in [1, {self.llm.num_layers - 1}] for this "
                f"{self.llm.num_layers}-layer LLM ({self.pretrained})"
            )

    def identity(self) -> dict[str, Any]:
        """Every setting that changes an answer (not rank, device, records_path or
        feature_cache): checkpoint and weights digest, compressor and parameters, retention,
        frames, dtype, preprocessing, position policy (resolved), attention, video newline,
        honour_until, on Qwen-VL the resize bounds (`pixels`), and `vision_head` when it is set
        and the compressor reads its signals (so that no other run's identity changes)."""
        return {
            "pretrained": self.pretrained,
            "weights": self.weights_fingerprint,
            "compressor": self.compressor_name,
            "params": dict(self.compressor.params),
            "retention": self.retention,
            "max_frames_num": self.max_frames_num,
            "dtype": self.dtype,
            "preprocess": self.llm.preprocess,
            "positions": self.llm.positions,
            "attn_implementation": self.attn_implementation,
            "video_newline": self.video_newline,
            "honour_until": self.honour_until,
            **({"pixels": dict(self.llm.pixels)} if getattr(self.llm, "pixels", None) else {}),
            **({"vision_head": self.vision_head, "vision_head_weights": self.head_fingerprint}
               if self._reads_head() else {}),
        }

    def _reads_head(self) -> bool:
        """Whether `vision_head` is set and the compressor asks for the signals it gives."""
        from backbones.siglip_head import HEAD_SIGNALS

        return bool(self.vision_head) and bool(set(self.compressor.signals) & set(HEAD_SIGNALS))

    def __repr__(self) -> str:
        """`ScissorBench({...identity...})`, the same in every process: lmms-eval 0.7.3's
        response cache keys a model instance by `str(model)` (caching/response_cache.py,
        `ResponseCache.create`: `model_fp = f"{model}|{model_args_fp}"`), and the default
        repr's memory address would make every new process miss the cache."""
        try:
            identity = self.identity()
        except AttributeError:  # still being built (a failed __init__'s traceback)
            return "ScissorBench(<not loaded>)"
        return f"ScissorBench({json.dumps(identity, sort_keys=True, default=str)})"

    # lmms-eval reads these
    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def batch_size(self) -> int:
        return 1

    def _rank_path(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        if self._world_size > 1:
            path = path.with_name(f"{path.stem}.rank{self._rank}{path.suffix}")
        return path

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)

    # ------------------------------------------------------------------ inputs
    def _doc(self, task: str, split: str, doc_id: int) -> dict:
        return self.task_dict[task][split][doc_id]

    def _visual(self, doc_to_visual, doc: dict) -> Visual:
        """The document's visual, resolved (`harness.video.parse_visual`): VideoError when
        there is none, it is a form scissorbench does not read, or the task's own
        `doc_to_visual` fails on the file system (nextqa's FileNotFoundError, a frame folder
        that PIL cannot read)."""
        try:
            visual = doc_to_visual(doc)
        except OSError as err:  # PIL's UnidentifiedImageError is an OSError too
            name = getattr(err, "filename", None) or "<doc_to_visual>"
            raise VideoError(str(name), f"the task's doc_to_visual failed: {err}") from err
        resolved = parse_visual(visual)
        if resolved.ignored:
            self._warn_once("multi", f"{resolved.ignored + 1} videos per document; using the first")
        return resolved

    def _cached_features(self, key: str, need: tuple[str, ...]):
        """The feature cache's entry for `key` holding the signals `need`, as `prepare`'s
        `encoded`, or None (a missing video file is a miss: the decoder then names it)."""
        try:
            entry = self.features.load(key, need)
        except OSError:
            return None
        return None if entry is None else _encoded(*entry, need)

    def _encode_for_cache(self, frames: Any, key: str, need: tuple[str, ...]):
        """Encode once for every configuration of the sweep and store it: always with the
        importance (as before), plus the other signals this compressor needs (FastVID's head
        signals are computed only for a method that asks: they load a second checkpoint)."""
        names = ("importance", *(n for n in need if n != "importance"))
        if names == ("importance",):  # the form every adapter has
            features, importance = self.llm.encode(frames, importance=True)
            signals = {"importance": importance}
        else:
            features, signals = self.llm.encode_signals(frames, names)
        self.features.save(key, features, signals)
        return _encoded(features, signals, need)

    def _prepare(self, doc_to_visual, task: str, split: str, doc_id: int):
        """(prepared, decode seconds, source, reused) for a document; cached for the last doc.

        source: the video path, the frame folder or a description of in-memory frames. The
        feature cache keys a video file by its path (a hit skips decoding) and any other form
        by a digest of the sampled frames (`feature_cache.content_key`)."""
        key = (task, split, doc_id)
        if key == self._prepared_key:
            if isinstance(self._prepared, VideoError):  # the other choices of a failed video
                raise self._prepared
            return self._prepared, 0.0, self._prepared_path, True
        self._prepared_key = None
        started = time.perf_counter()
        compressor = None if self.compressor_name == "none" else self.compressor
        wants = self._cache_signals(compressor)
        cached = frames = None
        try:
            visual = self._visual(doc_to_visual, self._doc(task, split, doc_id))
            cache_key = visual.video
            if self.features is not None and cache_key is not None:
                cached = self._cached_features(cache_key, wants)
            if cached is None:
                frames = sample_visual(visual, self.max_frames_num)
                if self.features is not None and cache_key is None:
                    cache_key = content_key(frames)
                    cached = self._cached_features(cache_key, wants)
        except VideoError as err:
            self._prepared_key, self._prepared, self._prepared_path = key, err, err.path
            raise
        decode = time.perf_counter() - started
        if self.features is not None and cached is None:  # encode once, for every config
            started = time.perf_counter()
            cached = self._encode_for_cache(frames, cache_key, wants)
            vision = time.perf_counter() - started
        else:
            vision = 0.0
        prepared = self.llm.prepare(frames, compressor, self.retention, encoded=cached)
        prepared.timings["vision"] += vision
        self._prepared_key, self._prepared, self._prepared_path = key, prepared, visual.label
        return prepared, decode, visual.label, False

    def _cache_signals(self, compressor: Any) -> tuple[str, ...]:
        """The signals a cached encoding must hold for `compressor` (those the adapter computes
        in the tower, `tower_signals`; the importance alone where the adapter predates it)."""
        if compressor is None:
            return ()
        if hasattr(self.llm, "tower_signals"):
            return tuple(self.llm.tower_signals(compressor))
        return ("importance",) if "importance" in compressor.signals else ()

    # ----------------------------------------------------------------- records
    def _full_prefill(self, text_tokens: int, visual_tokens: int) -> int:
        key = (text_tokens, visual_tokens)
        if key not in self._full_flops:
            per_layer = [text_tokens + visual_tokens] * self.llm.num_layers
            self._full_flops[key] = prefill_flops(
                per_layer, self.llm.hidden_size, self.llm.intermediate_size
            )
        return self._full_flops[key]

    def _record(self, base: dict[str, Any], acc: Any = None, error: str | None = None) -> dict:
        record: dict[str, Any] = {
            **base,
            "rank": self._rank,
            "compressor": self.compressor_name,
            "params": dict(self.compressor.params),
            "target_retention": self.retention,
            "max_frames_num": self.max_frames_num,
            "preprocess": self.llm.preprocess,
            "positions": self.llm.positions,
            "dtype": self.dtype,
            "honour_until": self.honour_until,
            "identity": self._identity_key,
            "error": error,
        }
        if acc is not None:
            record.update(self._accounting(acc))
            record["timings"] = {**record.get("timings", {}), **base.get("timings", {})}
            if base.get("prepared_reused"):  # the video was encoded for an earlier request
                for stage in ("vision", "compress"):
                    if stage in record["timings"]:
                        record["timings"][stage] = 0.0
        self.records.append(record)
        if self.records_path is not None:
            with self.records_path.open("a") as f:
                f.write(json.dumps(record, default=str) + "\n")
        return record

    def _accounting(self, acc: Any) -> dict[str, Any]:
        per_layer = [int(n) for n in acc.tokens_per_layer]
        fed = int(acc.visual_tokens_fed)
        visual = int(acc.visual_tokens)
        d, m = self.llm.hidden_size, self.llm.intermediate_size
        text = int(acc.prompt_tokens) - fed  # text and separators (video newline)
        flops = prefill_flops(per_layer, d, m)
        full = self._full_prefill(text, visual)
        visual_per_layer = [n - text for n in per_layer]
        visual_flops = prefill_flops(visual_per_layer, d, m)
        visual_full = self._full_prefill(0, visual)
        return {
            "visual_tokens": visual,
            "visual_tokens_fed": fed,
            "visual_tokens_per_layer": visual_per_layer,
            "tokens_per_layer": per_layer,
            "prompt_tokens": int(acc.prompt_tokens),
            "generated_tokens": int(getattr(acc, "generated_tokens", 0) or 0),
            "achieved_retention": float(acc.achieved_retention),
            "prefill_flops": flops,
            "prefill_flops_full": full,
            "prefill_flops_ratio": flops / full if full else None,
            "prefill_flops_ratio_visual": visual_flops / visual_full if visual_full else None,
            "timings": {k: float(v) for k, v in dict(acc.timings).items()},
            "peak_memory_bytes": getattr(acc, "peak_memory_bytes", None),
        }

    @staticmethod
    def _token_counts(acc: Any) -> VisualTokenCounts:
        return VisualTokenCounts(
            input_tokens=int(acc.prompt_tokens),
            output_tokens=int(getattr(acc, "generated_tokens", 0) or 0),
            visual_tokens=int(acc.visual_tokens),
            visual_tokens_fed=int(acc.visual_tokens_fed),
            achieved_retention=float(acc.achieved_retention),
        )

    # ------------------------------------------------------------- lmms-eval API
    def _gen_settings(self, gen_kwargs: dict) -> tuple[int, list[str]]:
        """(max_new_tokens, until) from a task's generation kwargs, read as lmms-eval 0.7.3's
        `llava_onevision` reads them: `max_new_tokens` is 1024 when the task gives none, and
        `until` is dropped (llava_onevision pops it: neither lmms-eval's default ["\\n\\n"]
        nor a task's own stop strings apply), so decoding stops at the end of the assistant
        turn (`<|im_end|>`), at EOS, or after `max_new_tokens`. With `honour_until=true` the
        task's `until` strings also stop decoding and are cut off the answer (lmms-eval's
        generation contract, which most of its other models follow). Decoding is greedy (the
        video tasks set do_sample false)."""
        gen_kwargs = dict(gen_kwargs or {})
        until = gen_kwargs.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        if until and not self.honour_until and until != [_DEFAULT_UNTIL]:
            self._warn_once("until", f"until={until!r} ignored, as lmms-eval's llava_onevision "
                                     "ignores it (honour_until=true applies it)")
        max_new = gen_kwargs.pop("max_new_tokens", None)
        max_new = _DEFAULT_MAX_NEW_TOKENS if max_new is None else int(max_new)
        if gen_kwargs.get("do_sample") or float(gen_kwargs.get("temperature", 0) or 0) > 0:
            self._warn_once("sample", "scissorbench decodes greedily; sampling settings ignored")
        return max_new, (until if self.honour_until else [])

    def _stamp(self, doc_to_visual: Any, task: str, split: str, doc_id: int) -> list | None:
        """What the document's visual files are now (path, size, mtime of each), so a journaled
        answer is reused only for the same files; None (never reused) for in-memory frames or a
        visual that cannot be read (it is then recomputed and fails as it should). Kept for the
        last document: its other choices need no second look at the files."""
        key = (task, split, doc_id)
        if key != self._stamp_key:
            self._stamp_key, self._stamp_value = key, self._file_stamp(doc_to_visual, key)
        return self._stamp_value

    def _file_stamp(self, doc_to_visual: Any, key: tuple) -> list | None:
        try:
            visual = self._visual(doc_to_visual, self._doc(*key))
            if visual.kind == "images":
                return None
            stats = [os.stat(path) for path in visual.items]
        except (VideoError, OSError):
            return None
        pairs = zip(visual.items, stats, strict=True)
        return [[path, st.st_size, st.st_mtime_ns] for path, st in pairs]

    def _answered(self, request_key: str, stamp: list | None) -> dict[str, Any] | None:
        """The journal's answer to this request, if an earlier process of the same model
        (same `identity`) computed it without error from the same files (`stamp`); it joins
        `self.records` (its line is already in the records file)."""
        if stamp is None:
            return None
        done = self._journal.get(request_key)
        if done is not None:
            self.records.append(done)
            self.resumed += 1
        return done

    def _forget_prepared(self) -> None:
        """Drop the cached video: a new batch of requests may come from another dataset copy
        under the same task name and doc ids."""
        self._prepared_key, self._prepared, self._prepared_path = None, None, ""
        self._stamp_key, self._stamp_value = None, None

    def _progress(self, requests: list[Instance], kind: str) -> tqdm:
        """A progress bar over `requests` on stderr, on rank 0 only (as lmms-eval's own
        models): a 4,000-question run is otherwise silent for hours."""
        return tqdm(requests, desc=f"scissorbench {kind}", disable=self._rank != 0,
                    unit="req", dynamic_ncols=True)

    def generate_until(self, requests: list[Instance]) -> list[GenerationResult]:
        self._forget_prepared()
        results: list[GenerationResult] = []
        for request in self._progress(requests, "generate_until"):
            if _is_padding(request):
                results.append(GenerationResult("", None))
                continue
            context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            max_new, until = self._gen_settings(gen_kwargs)
            stamp = self._stamp(doc_to_visual, task, split, doc_id)
            base = {"doc_id": doc_id, "task": task, "split": split, "request": "generate_until",
                    "request_key": _digest([task, split, doc_id, context, max_new, until, stamp])}
            done = self._answered(base["request_key"], stamp)
            if done is not None:
                results.append(GenerationResult(done["output"], _counts_of(done)))
                continue
            requested = time.perf_counter()  # the time to first token starts here
            try:
                prepared, decode, path, _ = self._prepare(doc_to_visual, task, split, doc_id)
            except VideoError as err:
                self._record({**base, "video": err.path}, error=err.reason)
                results.append(GenerationResult("", None))
                continue
            text, acc = self.llm.generate(prepared, context, max_new_tokens=max_new, until=until)
            text = text.strip()  # as llava_onevision hands answers to the task's scorer
            base.update(
                video=path,
                timings={"video_decode": decode, **_ttft(acc, requested)},
                compression=_info(prepared),
                output=text,
            )
            self._record(base, acc)
            results.append(GenerationResult(text, self._token_counts(acc)))
        return results

    def loglikelihood(self, requests: list[Instance]) -> list[GenerationResult]:
        """(loss, is_greedy) per request, wrapped in GenerationResult (module docstring).

        As lmms-eval's `llava_onevision` scores a choice: the continuation is the assistant's
        message, closed by the qwen_2 end of turn (`<|im_end|>\\n`), and the loss is the mean
        negative log-probability over those tokens (the model's cross-entropy loss with the
        context masked). is_greedy: every one of them is the argmax."""
        self._forget_prepared()
        results: list[GenerationResult] = []
        for request in self._progress(requests, "loglikelihood"):
            if _is_padding(request):
                results.append(GenerationResult(_FAILED, None))
                continue
            context, continuation, doc_to_visual, doc_id, task, split = request.args
            if not isinstance(continuation, str):  # output_type loglikelihood: doc_to_target
                continuation = continuation(self._doc(task, split, doc_id))
            base = {
                "doc_id": doc_id,
                "task": task,
                "split": split,
                "request": "loglikelihood",
                "continuation": continuation,
            }
            stamp = self._stamp(doc_to_visual, task, split, doc_id)
            base["request_key"] = _digest([task, split, doc_id, context, continuation, stamp])
            done = self._answered(base["request_key"], stamp)
            if done is not None:
                choice = Choice(float(done["output"]), bool(done["is_greedy"]))
                results.append(GenerationResult(choice, _counts_of(done)))
                continue
            requested = time.perf_counter()  # the time to first token starts here
            try:
                prepared, decode, path, reused = self._prepare(doc_to_visual, task, split, doc_id)
            except VideoError as err:
                self._record({**base, "video": err.path}, error=err.reason)
                results.append(GenerationResult(_FAILED, None))
                continue
            scored = continuation + _END_OF_TURN
            logprob, is_greedy, acc = self.llm.loglikelihood(prepared, context, scored)
            tokens = acc.scored_tokens
            loss = -float(logprob) / tokens
            base.update(
                video=path,
                timings={"video_decode": decode, **_ttft(acc, requested)},
                compression=_info(prepared),
                prepared_reused=reused,
                output=loss,
                logprob_sum=float(logprob),
                scored_tokens=tokens,
                is_greedy=bool(is_greedy),
            )
            self._record(base, acc)
            results.append(GenerationResult(Choice(loss, bool(is_greedy)), self._token_counts(acc)))
        return results

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("scissorbench does not implement multi-round generation")
