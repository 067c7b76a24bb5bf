"""LLaVA-NeXT checkpoints (`LlavaQwenForCausalLM`) converted to transformers' LLaVA-OneVision.

The paper's base models (`BBBBCHAN/LLaVA-Scissor-baseline-7B` / `-0.5B`) and the original
`lmms-lab/llava-onevision-qwen2-*` releases ship in the layout of github.com/LLaVA-VL/LLaVA-NeXT:
one `config.json` (a Qwen2 config plus `mm_*` keys), the weights under LLaVA-NeXT names and a
Qwen2 tokenizer without image tokens. The harness runs every model as
`LlavaOnevisionForConditionalGeneration`, so such a checkpoint is converted once:

    from backbones.llava_next import ensure_converted
    path = ensure_converted("BBBBCHAN/LLaVA-Scissor-baseline-7B")   # cached; else unchanged
    scissorbench convert SRC DST                                     # the same, by hand

What LLaVA-NeXT computes for a video, and how the converted config says it (LLaVA-NeXT files as
in its fork github.com/HumanMLLM/LLaVA-Scissor; transformers 5.x `models/llava_onevision`):
- vision: the SigLIP tower named by `mm_vision_tower` with its last encoder layer deleted and
  no head (`siglip_encoder.py` 569-572); features are `hidden_states[-1]` of the shortened
  tower (586-587), i.e. the last kept layer's output without `post_layernorm` (applied only to
  `last_hidden_state`, 445). `mm_vision_select_layer` is not read for SigLIP. transformers:
  `num_hidden_layers = tower layers - 1`, `vision_feature_layer = -1`,
  `vision_feature_select_strategy = "full"` (every patch, no CLS), as transformers' own
  converter does (`convert_llava_onevision_weights_to_hf.py` 140-148).
- projector `mlp2x_gelu`: Linear, exact GELU, Linear (`multimodal_projector/builder.py` 41-48),
  so LLaVA-NeXT indices 0 and 2 become `linear_1` / `linear_2`; `projector_hidden_act="gelu"`.
- video pooling: bilinear `F.interpolate` of each frame's grid to ceil(h/2) x ceil(w/2)
  (`llava_arch.py` 173-192, stride 2 at 291); transformers' `apply_pooling` is the same.
- `image_newline` exists when `mm_patch_merge_type` contains "unpad" (`llava_arch.py` 46-47);
  with `mm_newline_position="one_token"` one newline follows the video (345-353), which is
  what transformers' `get_video_features` appends. A checkpoint without it (flat merge) gets a
  zero vector; the harness's `video_newline=False` drops that token anyway.
- tokens: LLaVA-NeXT splices features at the placeholder id -200 (`constants.py` 8-9); the
  converted tokenizer gets `<image>` and `<video>` as special added tokens (as transformers'
  converter, 126-127), normally ids 151646/151647, inside Qwen2's padded vocabulary; only if they
  fall outside it, the embedding (and untied `lm_head`) grow to a multiple of 64 with rows set
  to the mean row (transformers' converter samples around that mean instead).
- processor: SigLIP preprocessing, resize to `image_size` (384) bicubic, rescale 1/255,
  mean = std = 0.5 (`siglip_encoder.py` 36); `num_image_tokens = (384/14)^2 = 729`;
  `image_grid_pinpoints` / `image_aspect_ratio` from the config ("(1x1),...,(6x6)" strings
  expanded as `mm_utils.py` 225-234). Chat template: the `qwen_2` conversation
  (`conversation.py` 443-452, 578-579; format 85-95) with its default system prompt. The
  processor's video preprocessing resizes with torchvision, not PIL, so `backbones.load` runs
  a converted checkpoint (`is_converted`) with `backbones.preprocess` by default instead.

Weight names (LLaVA-NeXT -> transformers, the prefixes of the installed transformers' model):
`model.embed_tokens|layers|norm.*` -> language model, `lm_head.weight` -> `lm_head.weight`
(tied to the embedding when `tie_word_embeddings`), `model.mm_projector.{0,2}.*` ->
`multi_modal_projector.linear_{1,2}.*`, `model.image_newline` -> `image_newline`,
`model.vision_tower.vision_tower.vision_model.*` -> the vision tower. Dropped on purpose:
rotary `inv_freq` and `position_ids` buffers, the tower's `head.*` and the deleted last layer
if a checkpoint kept them. Any other weight, or a missing one, is a `ConversionError` naming it.
The tower's layer count and head count come from its config (`mm_vision_tower` as a local
directory or in the local Hugging Face cache), else LLaVA-NeXT's SigLIP defaults
(so400m: 27 layers, 16 heads; `siglip_encoder.py` 74-88); widths come from the weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from backbones.chat import CHAT_TEMPLATE

__all__ = [
    "ConversionError",
    "convert",
    "ensure_converted",
    "is_converted",
    "is_llava_next_checkpoint",
    "source_settings",
]

log = logging.getLogger(__name__)

_FORMAT = 1  # bump when the converted layout changes: cached conversions are then redone
_MARKER = "scissorbench_conversion.json"  # written last: a directory with it is complete
_IMAGE_TOKEN, _VIDEO_TOKEN = "<image>", "<video>"
_VISION = "model.vision_tower.vision_tower.vision_model."
_PROJECTOR = "model.mm_projector."
_NEWLINE = "model.image_newline"
_EMBED, _LM_HEAD = "model.embed_tokens.weight", "lm_head.weight"
_SIGLIP_MEAN_STD = [0.5, 0.5, 0.5]
_VOCAB_MULTIPLE = 64

# LLaVA-NeXT's SigLipVisionConfig defaults (siglip-so400m-patch14-384), used when the tower's
# own config is not on this machine; the weights must then have its width.
_SIGLIP_DEFAULTS: dict[str, Any] = {
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "num_channels": 3,
    "image_size": 384,
    "patch_size": 14,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
    "attention_dropout": 0.0,
}



class ConversionError(ValueError):
    """A checkpoint that cannot be converted: the message names the weight or setting."""


# ------------------------------------------------------------------------------------------
# Public API


def is_llava_next_checkpoint(path: str | Path) -> bool:
    """True for a local directory whose config.json is a LLaVA-NeXT one (`mm_vision_tower`,
    no transformers `vision_config`/`text_config`)."""
    config = Path(path).expanduser() / "config.json"
    if not config.is_file():
        return False
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(data, dict)
        and "mm_vision_tower" in data
        and "vision_config" not in data
        and "text_config" not in data
    )


def is_converted(path: str | Path) -> bool:
    """True for a directory `convert` wrote (it holds the conversion marker, written last):
    a checkpoint that came from the LLaVA-NeXT layout."""
    return (Path(path).expanduser() / _MARKER).is_file()


def source_settings(path: str | Path) -> dict[str, Any] | None:
    """The source checkpoint's `mm_*` / `image_*` settings as the conversion marker recorded
    them (e.g. `mm_newline_position`, `mm_spatial_pool_mode`); None for a directory that was
    not converted from the LLaVA-NeXT layout."""
    marker = Path(path).expanduser() / _MARKER
    if not marker.is_file():
        return None
    return dict(json.loads(marker.read_text()).get("llava_next", {}))


def ensure_converted(pretrained: str, cache_dir: Path | None = None) -> str:
    """The transformers checkpoint to load for `pretrained`.

    A LLaVA-NeXT checkpoint (a local directory, or a hub id whose snapshot in the local
    Hugging Face cache has that layout) is converted once into
    `cache_dir/<name>-<fingerprint>` (default: `$SCISSORBENCH_CACHE/converted`, else
    `~/.cache/scissorbench/converted`) and that path is returned; the fingerprint covers the
    source config.json, the weight files' names, sizes and mtimes and the converter's format.
    Concurrent callers (data-parallel ranks) wait on a file lock, so one converts. Anything
    else is returned unchanged.
    """
    located = _locate(pretrained)
    if located is None:
        return pretrained
    source, name = located
    root = Path(cache_dir).expanduser() if cache_dir is not None else _default_cache()
    target = root / f"{name}-{_fingerprint(source)}"
    if (target / _MARKER).is_file():
        return str(target)
    from filelock import FileLock

    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / _MARKER).is_file():
            partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
            shutil.rmtree(partial, ignore_errors=True)
            log.info("converting LLaVA-NeXT checkpoint %s -> %s", source, target)
            try:
                convert(source, partial)
            except BaseException:
                shutil.rmtree(partial, ignore_errors=True)
                raise
            shutil.rmtree(target, ignore_errors=True)  # an incomplete earlier attempt
            os.replace(partial, target)
    return str(target)


def convert(src: str | Path, dst: str | Path) -> Path:
    """Write the LLaVA-NeXT checkpoint `src` (a directory, or a hub id whose snapshot is in the
    local Hugging Face cache) as a transformers LLaVA-OneVision checkpoint (config,
    safetensors, processor with tokenizer and chat template) to `dst`.

    `dst` must not exist or be empty. Raises ConversionError (a ValueError) naming the weight
    or setting that does not fit; nothing is written to `dst` before the checks pass.
    """
    from transformers import GenerationConfig, LlavaOnevisionForConditionalGeneration

    src, dst = _source(src), Path(dst).expanduser()
    config = _read_config(src)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise FileExistsError(f"conversion target {dst} exists and is not an empty directory")
    _check_settings(config)
    state = _load_weights(src)
    vision, tower_layers, tower_from = _vision_config(config, state)
    tokenizer, image_id, video_id = _tokenizer(src)
    tied = bool(config.get("tie_word_embeddings", False))
    _fit_vocab(state, max(image_id, video_id) + 1, tied)
    model_config = _model_config(config, state, vision, image_id, video_id, tied)
    with torch.device("meta"):
        model = LlavaOnevisionForConditionalGeneration(model_config)
    weights = _map_weights(state, model, tower_layers - 1, config, tied)
    model.load_state_dict(weights, strict=True, assign=True)
    if tied:
        model.tie_weights()
    model.eval()
    if (src / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(src)

    processor = _processor(tokenizer, vision, model_config)
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst)
    processor.save_pretrained(dst)
    record = {
        "format": _FORMAT,
        "source": str(src),
        "vision_tower": config["mm_vision_tower"],
        "vision_tower_config": tower_from,
        "vision_layers_used": tower_layers - 1,
        "image_token_id": image_id,
        "video_token_id": video_id,
        "llava_next": {k: v for k, v in config.items() if k.startswith(("mm_", "image_"))},
    }
    (dst / _MARKER).write_text(json.dumps(record, indent=2, default=str) + "\n")
    log.info("converted %s -> %s", src, dst)
    return dst


def _source(src: str | Path) -> Path:
    """The checkpoint directory of `src`: itself, or a hub id's snapshot in the local cache."""
    path = Path(src).expanduser()
    if path.is_dir():
        return path
    located = _locate(str(path))
    if located is None:
        raise ConversionError(
            f"{path} is neither a directory nor a hub id with a LLaVA-NeXT snapshot in the "
            "local Hugging Face cache"
        )
    return located[0]


def _model_config(config: dict[str, Any], state: dict[str, Any], vision: dict[str, Any],
                  image_id: int, video_id: int, tied: bool) -> Any:
    """The transformers `LlavaOnevisionConfig` of a LLaVA-NeXT config and its weights."""
    from transformers import LlavaOnevisionConfig

    return LlavaOnevisionConfig(
        text_config=_text_config(config, state),
        vision_config=vision,
        image_token_index=image_id,
        video_token_index=video_id,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        multimodal_projector_bias=True,
        tie_word_embeddings=tied,
        image_grid_pinpoints=_pinpoints(config, vision["image_size"]),
        vision_aspect_ratio=_aspect_ratio(config),
    )


# ------------------------------------------------------------------------------------------
# Locating and fingerprinting sources


def _locate(pretrained: str) -> tuple[Path, str] | None:
    """(LLaVA-NeXT directory, cache name) for `pretrained`, or None to leave it alone."""
    path = Path(pretrained).expanduser()
    if path.is_dir():
        return (
            (path.resolve(), _safe_name(path.resolve().name))
            if is_llava_next_checkpoint(path)
            else None
        )
    from huggingface_hub import snapshot_download

    try:
        snapshot = Path(snapshot_download(pretrained, local_files_only=True))
    except (OSError, ValueError):  # not cached (LocalEntryNotFoundError), not a repo id
        return None
    if not is_llava_next_checkpoint(snapshot):
        return None
    return snapshot, _safe_name(pretrained.replace("/", "--"))


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "checkpoint"


def _default_cache() -> Path:
    root = os.environ.get("SCISSORBENCH_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "scissorbench"
    return base / "converted"


def _fingerprint(src: Path) -> str:
    digest = hashlib.sha256(f"format={_FORMAT}\n".encode())
    digest.update((src / "config.json").read_bytes())
    for file in _weight_files(src):
        stat = file.stat()
        digest.update(f"\n{file.name} {stat.st_size} {stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


# ------------------------------------------------------------------------------------------
# Reading the source


def _read_config(src: Path) -> dict[str, Any]:
    if not is_llava_next_checkpoint(src):
        raise ConversionError(
            f"{src} is not a LLaVA-NeXT checkpoint directory (expected config.json with "
            "'mm_vision_tower' and no 'vision_config'/'text_config')"
        )
    return json.loads((src / "config.json").read_text())


def _check_settings(config: dict[str, Any]) -> None:
    architectures = config.get("architectures") or ["LlavaQwenForCausalLM"]
    if not any("qwen" in str(name).lower() for name in architectures):
        raise ConversionError(
            f"architectures={architectures}: only LlavaQwenForCausalLM (a Qwen2 LLM) converts "
            "to LLaVA-OneVision"
        )
    tower = str(config["mm_vision_tower"])
    if "siglip" not in tower.lower():
        raise ConversionError(
            f"mm_vision_tower={tower!r}: only SigLIP towers are supported (LLaVA-NeXT picks "
            "its SigLIP tower by 'siglip' in this name)"
        )
    projector = config.get("mm_projector_type", "linear")
    if projector != "mlp2x_gelu":
        raise ConversionError(
            f"mm_projector_type={projector!r}: LLaVA-OneVision needs 'mlp2x_gelu'"
        )
    if config.get("add_faster_video"):
        raise ConversionError("add_faster_video=true has no LLaVA-OneVision counterpart")
    mode = config.get("mm_spatial_pool_mode", "bilinear")
    stride = config.get("mm_spatial_pool_stride", 2)
    if mode != "bilinear" or stride != 2:
        log.warning(
            "mm_spatial_pool_mode=%s, stride=%s: transformers' LLaVA-OneVision pools video "
            "bilinearly with stride 2 (as lmms-eval's llava_onevision overrides it)",
            mode,
            stride,
        )


def _weight_files(src: Path) -> list[Path]:
    """The checkpoint's weight files: from the shard index when there is one."""
    for index_name, pattern in (
        ("model.safetensors.index.json", "*.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model*.bin"),
    ):
        index = src / index_name
        if index.is_file():
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            return [src / name for name in names]
        files = sorted(src.glob(pattern))
        if files:
            return files
    raise ConversionError(f"no *.safetensors or pytorch_model*.bin weights in {src}")


def _load_weights(src: Path) -> dict[str, Tensor]:
    state: dict[str, Tensor] = {}
    for file in _weight_files(src):
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            part = load_file(file, device="cpu")
        else:
            part = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        twice = sorted(part.keys() & state.keys())
        if twice:
            raise ConversionError(f"weight {twice[0]!r} appears in more than one file of {src}")
        state.update(part)
    return state


def _require(state: dict[str, Tensor], key: str) -> Tensor:
    if key not in state:
        raise ConversionError(f"missing weight {key!r} in the LLaVA-NeXT checkpoint")
    return state[key]


def _tower_config(name: str) -> tuple[dict[str, Any], str] | None:
    """The vision tower's own config (local directory or local HF cache) and where it was."""
    path = Path(name).expanduser() / "config.json"
    if not path.is_file():
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = try_to_load_from_cache(name, "config.json")
        except (OSError, ValueError):
            cached = None
        if not isinstance(cached, str):
            return None
        path = Path(cached)
    data = json.loads(path.read_text())
    if data.get("model_type") == "siglip":  # a full SigLIP (text + vision) config
        data = data.get("vision_config", {})
    return data, str(path)


def _vision_config(
    config: dict[str, Any], state: dict[str, Tensor]
) -> tuple[dict[str, Any], int, str]:
    """(SiglipVisionConfig kwargs of the shortened tower, the full tower's layer count, where
    the tower config came from). Widths are read from the weights."""
    patch = _require(state, _VISION + "embeddings.patch_embedding.weight")
    positions = _require(state, _VISION + "embeddings.position_embedding.weight").shape[0]
    fc1 = _require(state, _VISION + "encoder.layers.0.mlp.fc1.weight")
    side = math.isqrt(positions)
    if side * side != positions:
        raise ConversionError(f"{positions} vision position embeddings is not a square grid")
    shapes = {
        "hidden_size": patch.shape[0],
        "num_channels": patch.shape[1],
        "patch_size": patch.shape[2],
        "intermediate_size": fc1.shape[0],
    }
    name = str(config["mm_vision_tower"])
    found = _tower_config(name)
    if found is None:
        if shapes["hidden_size"] != _SIGLIP_DEFAULTS["hidden_size"]:
            raise ConversionError(
                f"the config of vision tower {name!r} is not on this machine and its weights "
                f"(width {shapes['hidden_size']}) are not siglip-so400m's; make "
                "mm_vision_tower a local directory with the tower's config.json or put it in "
                "the Hugging Face cache"
            )
        tower, tower_from = dict(_SIGLIP_DEFAULTS), "LLaVA-NeXT SigLipVisionConfig defaults"
    else:
        tower, tower_from = found
    for key, value in shapes.items():
        if key in tower and tower[key] != value:
            raise ConversionError(
                f"vision tower {key}={tower[key]} in {tower_from} but the weights give {value}"
            )
    # 384 px / 14 px patches = 27 per side (the border is dropped): image_size stays 384
    image_size = int(tower.get("image_size", side * shapes["patch_size"]))
    if image_size // shapes["patch_size"] != side:
        raise ConversionError(
            f"vision tower image_size={image_size} in {tower_from} gives "
            f"{image_size // shapes['patch_size']} patches per side, the weights {side}"
        )
    layers = int(tower.get("num_hidden_layers", _SIGLIP_DEFAULTS["num_hidden_layers"]))
    if layers < 2:
        raise ConversionError(f"vision tower with {layers} layer(s): nothing left to use")
    vision = {
        "model_type": "siglip_vision_model",
        **shapes,
        "image_size": image_size,
        "num_hidden_layers": layers - 1,
        "num_attention_heads": tower.get(
            "num_attention_heads", _SIGLIP_DEFAULTS["num_attention_heads"]
        ),
        "hidden_act": tower.get("hidden_act", _SIGLIP_DEFAULTS["hidden_act"]),
        "layer_norm_eps": tower.get("layer_norm_eps", _SIGLIP_DEFAULTS["layer_norm_eps"]),
        "attention_dropout": tower.get("attention_dropout", 0.0),
        "vision_use_head": False,
    }
    if vision["hidden_size"] % vision["num_attention_heads"]:
        raise ConversionError(
            f"vision width {vision['hidden_size']} is not divisible by "
            f"{vision['num_attention_heads']} heads ({tower_from})"
        )
    return vision, layers, tower_from


def _text_config(config: dict[str, Any], state: dict[str, Tensor]) -> Any:
    """The Qwen2 part of the LLaVA-NeXT config; vocab_size from the embedding's rows."""
    from transformers import Qwen2Config

    known = set(Qwen2Config().to_dict()) | {"rope_theta", "rope_scaling"}
    skip = {"model_type", "architectures", "transformers_version", "_name_or_path", "dtype"}
    kwargs = {k: v for k, v in config.items() if k in known and k not in skip}
    if kwargs.get("rope_scaling", 0) is None:
        del kwargs["rope_scaling"]  # plain rotary; transformers 5 deprecates the key
    rows = _require(state, _EMBED).shape[0]
    if kwargs.get("vocab_size", rows) != rows:
        log.info(
            "vocab_size %s in config.json, %s embedding rows: using the rows",
            kwargs.get("vocab_size"),
            rows,
        )
    kwargs["vocab_size"] = rows
    return Qwen2Config(**kwargs)


def _tokenizer(src: Path) -> tuple[Any, int, int]:
    """The source tokenizer with <image> and <video> as special tokens, and their ids."""
    from transformers import AddedToken, AutoTokenizer, Qwen2Config

    # config= keeps AutoTokenizer from parsing the LLaVA-NeXT config.json as a transformers one
    tokenizer = AutoTokenizer.from_pretrained(src, config=Qwen2Config())
    vocab = tokenizer.get_vocab()
    new = [t for t in (_IMAGE_TOKEN, _VIDEO_TOKEN) if t not in vocab]
    if new:
        tokenizer.add_tokens(
            [AddedToken(t, special=True, normalized=False) for t in new], special_tokens=True
        )
    tokenizer.chat_template = CHAT_TEMPLATE
    ids = tokenizer.convert_tokens_to_ids([_IMAGE_TOKEN, _VIDEO_TOKEN])
    return tokenizer, int(ids[0]), int(ids[1])


def _fit_vocab(state: dict[str, Tensor], needed: int, tied: bool) -> None:
    """Grow the embedding (and an untied lm_head) to hold token ids < `needed`: new rows are
    the mean row, padded to a multiple of 64. Qwen2 checkpoints already have room."""
    embed = _require(state, _EMBED)
    rows = embed.shape[0]
    if needed <= rows:
        return
    size = -(-needed // _VOCAB_MULTIPLE) * _VOCAB_MULTIPLE
    log.info("growing the vocabulary from %d to %d rows for <image>/<video>", rows, size)
    keys = [_EMBED] if tied or _LM_HEAD not in state else [_EMBED, _LM_HEAD]
    for key in keys:
        table = state[key]
        mean = table.float().mean(0, keepdim=True).to(table.dtype)
        state[key] = torch.cat([table, mean.expand(size - rows, -1)])


def _pinpoints(config: dict[str, Any], image_size: int) -> list[list[int]]:
    """image_grid_pinpoints as [[h, w], ...]: lists as they are, LLaVA-NeXT's "(1x1),...,(6x6)"
    range strings expanded in units of the image size, default 1x1 .. 6x6."""
    value = config.get("image_grid_pinpoints")
    if isinstance(value, list) and value:
        return [[int(h), int(w)] for h, w in value]
    ranges = re.findall(r"\((\d+)x(\d+)\)", value) if isinstance(value, str) else []
    (a0, b0), (a1, b1) = (
        ((int(ranges[0][0]), int(ranges[0][1])), (int(ranges[-1][0]), int(ranges[-1][1])))
        if ranges
        else ((1, 1), (6, 6))
    )
    return [[i * image_size, j * image_size] for i in range(a0, a1 + 1) for j in range(b0, b1 + 1)]


def _aspect_ratio(config: dict[str, Any]) -> str:
    value = str(config.get("image_aspect_ratio", ""))
    return value if re.fullmatch(r"anyres_max_\d+", value) else "anyres_max_9"


# ------------------------------------------------------------------------------------------
# Weights


def _prefixes(model: Any) -> dict[str, str]:
    """Where the installed transformers keeps each part (names moved between versions)."""
    keys = list(model.state_dict())

    def ending(suffix: str) -> str:
        hits = [k[: -len(suffix)] for k in keys if k.endswith(suffix)]
        if len(hits) != 1:
            raise RuntimeError(f"cannot place {suffix!r} in the transformers model: {hits}")
        return hits[0]

    return {
        "vision": ending("embeddings.patch_embedding.weight"),
        "projector": ending("linear_1.weight"),
        "newline": ending("image_newline") + "image_newline",
        "llm": ending("embed_tokens.weight"),
        "lm_head": ending("lm_head.weight") + "lm_head.weight",
    }


def _map_weights(
    state: dict[str, Tensor],
    model: Any,
    vision_layers: int,
    config: dict[str, Any],
    tied: bool,
) -> dict[str, Tensor]:
    """The model's state dict filled from LLaVA-NeXT weights; ConversionError names any
    missing, unexpected or misshapen weight by its LLaVA-NeXT name."""
    p = _prefixes(model)
    pairs = [  # (LLaVA-NeXT prefix, transformers prefix), first match wins both ways
        (_VISION, p["vision"]),
        (_PROJECTOR + "0.", p["projector"] + "linear_1."),
        (_PROJECTOR + "2.", p["projector"] + "linear_2."),
        (_NEWLINE, p["newline"]),
        (_LM_HEAD, p["lm_head"]),
        ("model.", p["llm"]),
    ]
    targets = model.state_dict()
    out: dict[str, Tensor] = {}
    unexpected: list[str] = []
    for key, tensor in state.items():
        if _dropped(key, vision_layers):
            continue
        new = _rename(key, pairs)
        if new is None or new not in targets:
            unexpected.append(key)
            continue
        if tuple(tensor.shape) != tuple(targets[new].shape):
            raise ConversionError(
                f"weight {key!r} has shape {tuple(tensor.shape)}, {new!r} needs "
                f"{tuple(targets[new].shape)}"
            )
        out[new] = tensor
    if unexpected:
        raise ConversionError(
            f"unexpected weight(s) with no LLaVA-OneVision counterpart: {_listing(unexpected)}"
        )
    if tied and p["lm_head"] in targets and p["lm_head"] not in out:
        out[p["lm_head"]] = out[p["llm"] + "embed_tokens.weight"]
    if p["newline"] not in out and "unpad" not in str(config.get("mm_patch_merge_type", "")):
        log.warning("no image_newline (mm_patch_merge_type has no 'unpad'): using zeros")
        dtype = next(iter(out.values())).dtype
        out[p["newline"]] = torch.zeros(targets[p["newline"]].shape, dtype=dtype)
    missing = [k for k in targets if k not in out]
    if missing:
        names = [_rename(k, [(b, a) for a, b in pairs]) or k for k in missing]
        raise ConversionError(f"missing weight(s) in the LLaVA-NeXT checkpoint: {_listing(names)}")
    return out


def _dropped(key: str, vision_layers: int) -> bool:
    """Weights LLaVA-NeXT never uses: rotary/position buffers, the tower's head and its
    deleted last layer (siglip_encoder.py 571-572)."""
    if key.endswith((".inv_freq", "embeddings.position_ids")):
        return True
    if not key.startswith(_VISION):
        return False
    rest = key[len(_VISION) :]
    if rest.startswith("head."):
        return True
    layer = re.match(r"encoder\.layers\.(\d+)\.", rest)
    return layer is not None and int(layer.group(1)) == vision_layers


def _rename(key: str, pairs: list[tuple[str, str]]) -> str | None:
    for old, new in pairs:
        if key.startswith(old):
            return new + key[len(old) :]
    return None


def _listing(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(repr(k) for k in sorted(keys)[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


# ------------------------------------------------------------------------------------------
# Processor


def _processor(tokenizer: Any, vision: dict[str, Any], config: Any) -> Any:
    from transformers import (
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )
    from transformers.image_utils import PILImageResampling

    side = vision["image_size"]
    common = {
        "size": {"height": side, "width": side},
        "image_mean": _SIGLIP_MEAN_STD,
        "image_std": _SIGLIP_MEAN_STD,
        "resample": PILImageResampling.BICUBIC,
        "rescale_factor": 1 / 255,
    }
    image_processor = LlavaOnevisionImageProcessor(
        **common, image_grid_pinpoints=config.image_grid_pinpoints
    )
    video_processor = LlavaOnevisionVideoProcessor(**common)
    return LlavaOnevisionProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        num_image_tokens=(side // vision["patch_size"]) ** 2,
        vision_feature_select_strategy="full",
        chat_template=CHAT_TEMPLATE,
        vision_aspect_ratio=config.vision_aspect_ratio,
    )
