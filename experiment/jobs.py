"""What a job dir holds: its config, its evaluations, and whether the run is done.

Shared by the sweep scripts (`python -m experiment.jobs state JOB_DIR EPOCHS`, which prints
`done`, `resume` or `new`) and by the aggregator. Imports nothing heavy, so a sweep can ask
about hundreds of job dirs quickly.
"""
import json
import sys
from pathlib import Path

EVALUATIONS = ("dense", "pruned", "finetune")


def read_config(job_dir):
    path = Path(job_dir) / "config.json"
    return json.loads(path.read_text()) if path.is_file() else None


def read_metrics(job_dir):
    """The records of metrics.jsonl; a torn last line (a run killed mid-write) is skipped."""
    path = Path(job_dir) / "metrics.jsonl"
    records = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def last(records, phase):
    """The last record of `phase` (a resumed run may repeat an epoch: the later one counts)."""
    matching = [r for r in records if r.get("phase") == phase]
    return matching[-1] if matching else None


def final_record(records, num_epochs):
    """The result of a finished run: its finetune record at epoch `num_epochs` (or `pruned` when 0)."""
    if num_epochs == 0:
        return last(records, "pruned")
    done = [r for r in records if r.get("phase") == "finetune" and r.get("epoch") == num_epochs]
    return done[-1] if done else None


def state(job_dir, num_epochs):
    """`done` when the run has its final record (and checkpoint), `resume` when a fine-tuning
    checkpoint exists, else `new` (nothing worth keeping: the sweep starts the dir afresh)."""
    job_dir = Path(job_dir)
    last_checkpoint = job_dir / "checkpoint" / "model_last.pt"
    if last_checkpoint.is_file() and final_record(read_metrics(job_dir), num_epochs) is not None:
        return "done"
    return "resume" if last_checkpoint.is_file() and num_epochs > 0 else "new"


def dense_state(job_dir):
    """`done` once a dense pre-training job has saved checkpoint/dense.pt and its `pruned` record,
    `resume` when it left a checkpoint (stopped while pre-training: --resume continues it), else `new`."""
    job_dir = Path(job_dir)
    if (job_dir / "checkpoint" / "dense.pt").is_file() and last(read_metrics(job_dir), "pruned"):
        return "done"
    return "resume" if (job_dir / "checkpoint" / "model_last.pt").is_file() else "new"


if __name__ == "__main__":
    usage = "usage: python -m experiment.jobs {state JOB_DIR EPOCHS | dense_state JOB_DIR}"
    command, arguments = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else (None, [])
    if command == "state" and len(arguments) == 2:
        print(state(arguments[0], int(arguments[1])))
    elif command == "dense_state" and len(arguments) == 1:
        print(dense_state(arguments[0]))
    else:
        sys.exit(usage)
