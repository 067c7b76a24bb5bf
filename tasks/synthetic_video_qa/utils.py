"""lmms-eval glue of the synthetic_video_qa tasks: data loading, prompt, scoring.

The questions come from `synthetic.task` (`scissorbench synth-data` and the runner write them).
The data directory is `<data root>/<dataset_path>`, the data root being the environment variable
named by `metadata.data_env` (SCISSORBENCH_DATA), else `metadata.data_root` when a variant sets
one (relative to this directory), else the user cache (`synthetic.task.cache_root()`,
~/.cache/scissorbench): where the runner and `synth-data` write without the variable. The task
reads the local JSONL index itself; nothing goes through the Hugging Face hub or cache.
"""

from __future__ import annotations

import ast
import math
import os
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict
from lmms_eval.api.task import ConfigurableTask

from synthetic.task import cache_root, format_prompt, is_right, read_split

_HERE = Path(__file__).resolve().parent


def dataset_dir(config: Any) -> Path:
    """The directory holding `<split>.jsonl` and `videos/` for this task config."""
    metadata = config.metadata if isinstance(config.metadata, dict) else {}
    env = metadata.get("data_env", "SCISSORBENCH_DATA")
    value = os.environ.get(env, "").strip() if env else ""
    if value:
        root = Path(value).expanduser()
    elif metadata.get("data_root"):
        root = _HERE / Path(metadata["data_root"]).expanduser()
    else:
        root = cache_root()
    return (root / (config.dataset_path or "synthetic_video_qa")).resolve()


class SyntheticVideoQATask(ConfigurableTask):
    """A ConfigurableTask that loads its split from the local JSONL written by synth-data."""

    def __init__(self, *args: Any, config: dict | None = None, **kwargs: Any) -> None:
        if config is not None:
            config = dict(config)
            config.pop("class", None)
        super().__init__(*args, config=config, **kwargs)

    def download(self, dataset_kwargs: dict | None = None) -> None:
        root = dataset_dir(self.config)
        split = self.config.test_split
        index = root / f"{split}.jsonl"
        if not index.is_file():
            raise FileNotFoundError(
                f"synthetic_video_qa: no {index}; create it with `scissorbench synth-data "
                f"--root {root.parent}` or point SCISSORBENCH_DATA at a data root that has "
                f"synthetic_video_qa/{split}.jsonl"
            )
        rows = read_split(root, split)
        for row in rows:
            row["video_path"] = str(root / row["video"])
        self.dataset = DatasetDict({split: Dataset.from_list(rows)})
        self.dataset_no_image = self.dataset


def doc_to_visual(doc: dict) -> list[str]:
    return [doc["video_path"]]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    kwargs = lmms_eval_specific_kwargs or {}
    prompt = format_prompt(doc["question"], doc["options"])
    default_post = "\nAnswer with the option's letter from the given choices directly."
    # format_prompt already ends with the default instruction; a custom one replaces it
    post = kwargs.get("post_prompt", default_post)
    if post != default_post:
        prompt = prompt.rsplit("\n", 1)[0] + post
    return kwargs.get("pre_prompt", "") + prompt


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """generate_until: right when the answer names the correct option letter."""
    return {"accuracy": float(is_right(results[0] if results else "", doc))}


def _loss(result: Any) -> float:
    """The loss of one choice: a (loss, is_greedy) pair, or its str() as lmms-eval 0.7.3 logs
    plain tuples returned by a model."""
    if isinstance(result, str):
        try:
            result = ast.literal_eval(result)
        except (ValueError, SyntaxError):
            return math.inf
    value = float(result[0]) if isinstance(result, (tuple, list)) else float(result)
    return value if math.isfinite(value) else math.inf


def process_results_mc(doc: dict, results: list[Any]) -> dict[str, float]:
    """multiple_choice: the choice with the lowest loss; no finite loss (the sample failed) or
    a tie for the lowest counts as wrong."""
    losses = [_loss(r) for r in results]
    best = min(losses) if losses else math.inf
    winners = [i for i, v in enumerate(losses) if v == best]
    right = math.isfinite(best) and winners == [doc["answer_index"]]
    return {"accuracy": float(right)}
