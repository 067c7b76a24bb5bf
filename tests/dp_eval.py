"""Run `synthetic_video_qa` through lmms-eval with the scissorbench model and dump per-doc answers.

    python tests/dp_eval.py --pretrained TINY --out answers.json [--task T] [--limit N] [...]
    torchrun --standalone --nproc_per_node 2 tests/dp_eval.py --pretrained TINY --out answers.json

Under torchrun every rank evaluates its shard (lmms-eval splits documents by rank; on CPU the
process group is gloo and lmms-eval's "torchrun" executor backend, since accelerate sees a
single process on CPU) and rank 0 writes {doc_id: response} of all documents, gathered by
lmms-eval, plus each rank's model records to `<out>.records.rank<r>.jsonl`. Used by
tests/test_lmms_model.py to check that two processes answer exactly as one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pretrained", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--task", default="synthetic_video_qa")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--model_args", default="compressor=scc,retention=0.35,max_frames_num=4")
    args = parser.parse_args()

    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0

    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    import harness
    from harness.lmms_model import ScissorBench, parse_value

    model_args = dict(kv.split("=", 1) for kv in args.model_args.split(",") if kv)
    records = args.out.with_name(f"{args.out.name}.records.jsonl")
    model = ScissorBench(
        pretrained=args.pretrained,
        records_path=str(records),
        **{k: parse_value(v) for k, v in model_args.items()},
    )
    results = simple_evaluate(
        model=model,
        tasks=[args.task],
        limit=args.limit,
        # only scissorbench's tasks: indexing lmms-eval's hundreds of built-ins takes seconds
        task_manager=TaskManager(include_path=harness.tasks_dir(), include_defaults=False),
        log_samples=True,
        bootstrap_iters=0,
        distributed_executor_backend="torchrun" if world > 1 else "accelerate",
    )
    if rank == 0:
        samples = results["samples"][args.task]
        answers = {str(s["doc_id"]): s["resps"] for s in samples}
        args.out.write_text(json.dumps(answers, indent=1, sort_keys=True, default=str))
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
    # Every result is written and the ranks have met at the barrier: leave without the
    # interpreter's teardown, where a loaded, busy machine once aborted a rank ("terminate
    # called without an active exception", exit -6) after its work was done.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
