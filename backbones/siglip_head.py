"""The SigLIP attention-pooling head, loaded apart from its tower: FastVID's two model signals.

LLaVA-OneVision, LLaVA-Video and the LLaVA-Scissor baselines keep SigLIP-so400m-patch14-384
without its last encoder layer and without its head. FastVID (github.com/LunarShen/FastVID at
a40a109cb8df20e8c2c17c6850f8269717369990, `SigLipVisionAbstract` in
`fastvid_llavaonevision/LLaVA-NeXT/llava/model/multimodal_encoder/siglip_encoder.py`, the same
class under `fastvid_llavavideo/`) loads the ORIGINAL checkpoint (`mm_vision_tower`) a second
time, keeps only its `post_layernorm` and `head` (`SigLipMultiheadAttentionPoolingHead`), and
runs them on what the truncated tower hands the projector, `hidden_states[-1]` [T, 729, 1152]
(`encode_images` in `llava/model/llava_arch.py`), in the model's dtype (float16 there):

- `frame_features` [T, C]: the head's pooled output: a learned probe attends over the P tokens
  (`nn.MultiheadAttention`), then residual + MLP(layernorm), first (only) query.
- `head_attention` [T, P]: that attention's weights as `nn.MultiheadAttention` returns them by
  default (`need_weights=True`, `average_attn_weights=True`): the probe's softmax over the P
  keys, averaged over the heads. The adapter resizes them to its token grid
  (`get_attn_2dPool`: bilinear to ceil(27/2) = 14 on LLaVA-OneVision, 2x2 average pooling to
  13 on LLaVA-Video); they are never renormalised.

`SiglipHead.load` reads the head from a hub id or a local directory with transformers'
`SiglipVisionModel.from_pretrained` (as the official code does, a SigLIP text+vision checkpoint
included) and drops everything else. `write_tiny_siglip_head` writes a random one at a tiny
tower's width for the tests (no hub at test time).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["HEAD_SIGNALS", "SiglipHead", "write_tiny_siglip_head"]

HEAD_SIGNALS = ("frame_features", "head_attention")  # what the head gives, per frame


class SiglipHead(nn.Module):
    """`post_layernorm` + attention-pooling `head` of a SigLIP checkpoint (module docstring).

    source: where it was loaded from (hub id or directory), for messages and the records.
    width:  the hidden size C of the tower it belongs to.
    """

    def __init__(self, post_layernorm: nn.Module, head: nn.Module, source: str) -> None:
        super().__init__()
        self.post_layernorm = post_layernorm
        self.head = head
        self.source = source
        self.width = int(post_layernorm.normalized_shape[0])

    @classmethod
    def load(cls, source: str, *, device: Any = "cpu", dtype: torch.dtype = torch.float32
             ) -> SiglipHead:
        """The head of the SigLIP checkpoint `source` (hub id or directory) on `device` in
        `dtype`. OSError naming `vision_head` when it cannot be loaded (offline and not cached),
        ValueError when the checkpoint has no head (`vision_use_head` false)."""
        from transformers import SiglipVisionModel

        try:
            model = SiglipVisionModel.from_pretrained(source, dtype=dtype)
        except OSError as err:
            raise OSError(
                f"vision_head={source!r}: cannot load a SigLIP checkpoint from it (not a "
                "directory, and not on the Hugging Face hub or not in the local cache while "
                "offline). Download it once online (e.g. `huggingface-cli download "
                "google/siglip-so400m-patch14-384`) or point vision_head at a local SigLIP "
                f"checkpoint directory: {err}"
            ) from err
        head = getattr(model, "head", None)
        if not getattr(model, "use_head", False) or head is None:
            raise ValueError(
                f"vision_head={source!r} has no attention-pooling head (vision_use_head is "
                "false): give the original SigLIP checkpoint the tower was cut from, e.g. "
                "google/siglip-so400m-patch14-384"
            )
        return cls(model.post_layernorm, head, source).to(device=device, dtype=dtype).eval()

    @torch.inference_mode()
    def forward(self, hidden: Tensor) -> tuple[Tensor, Tensor]:
        """(frame_features [T, C], attention [T, P]), both float32, from the tower output
        [T, P, C]; computed in the head's own dtype, as `SigLipVisionAbstract.forward`."""
        if hidden.dim() != 3 or hidden.shape[-1] != self.width:
            raise ValueError(
                f"vision_head={self.source!r} is {self.width} wide, but the tower's features are "
                f"{tuple(hidden.shape)}: vision_head must be the SigLIP checkpoint the tower was "
                "cut from"
            )
        dtype = self.post_layernorm.weight.dtype
        x = self.post_layernorm(hidden.to(dtype))
        probe = self.head.probe.repeat(x.shape[0], 1, 1)
        pooled, weights = self.head.attention(probe, x, x)  # weights: [T, 1, P], head-averaged
        pooled = pooled + self.head.mlp(self.head.layernorm(pooled))
        return pooled[:, 0].float(), weights[:, 0].float()


def write_tiny_siglip_head(path: str | Path, vision_hidden: int, *, heads: int = 4,
                           seed: int = 0, initializer_range: float = 0.2) -> Path:
    """Write a random one-layer `SiglipVisionModel` with its head (`vision_use_head=True`),
    `vision_hidden` wide with `heads` heads, to `path` (as `save_pretrained`); returns `path`.

    Weights are drawn at `initializer_range` (the probe from a unit normal) so that the head's
    attention is far from uniform, as in `backbones.tiny`. Seeded: same seed, same weights."""
    from transformers import SiglipVisionConfig, SiglipVisionModel

    config = SiglipVisionConfig(
        hidden_size=vision_hidden, intermediate_size=2 * vision_hidden, num_hidden_layers=1,
        num_attention_heads=heads, image_size=28, patch_size=14, vision_use_head=True,
    )
    torch.manual_seed(seed)
    model = SiglipVisionModel(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("weight") and param.dim() == 2:
                param.normal_(0.0, initializer_range)
        model.head.probe.normal_(0.0, 1.0)
    path = Path(path)
    model.save_pretrained(path)
    return path
