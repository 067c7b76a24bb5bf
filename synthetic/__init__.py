"""The synthetic video QA and the micro model trained on it.

- `synthetic.task`: the question generator (videos, prompts, splits) and its scorer, used by
  the lmms-eval task in `tasks/synthetic_video_qa/`.
- `synthetic.micro`: the micro LLaVA-OneVision (geometry, tokenizer trained on the task's
  wording).
- `synthetic.train`: `scissorbench train-micro`, which trains it on the CPU.

It sits above the harness: training decodes the task's videos with the harness's frame sampler,
so the model is trained on exactly the frames the evaluation feeds it.
"""
