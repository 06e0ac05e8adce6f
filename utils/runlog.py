"""What a run leaves in `--job_dir`: config.txt, logger<timestamp>.log, metrics.jsonl, run/ (TensorBoard)."""
import datetime
import json
import logging
import sys
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter


def setup_logging(job_dir=None):
    """Log to stdout, and once the job dir may be written, to `logger<timestamp>.log` there too."""
    handlers = [logging.StreamHandler(sys.stdout)]
    if job_dir is not None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        handlers.append(logging.FileHandler(Path(job_dir) / f"logger{stamp}.log"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(message)s", datefmt="%H:%M:%S",
                        handlers=handlers, force=True)


def write_config(job_dir, args):
    """config.txt as the authors write it (one `name: value` per line), plus config.json for tools."""
    config = vars(args)
    (Path(job_dir) / "config.txt").write_text("".join(f"{k}: {v}\n" for k, v in config.items()))
    (Path(job_dir) / "config.json").write_text(json.dumps(config, indent=1, default=str) + "\n")


class RunLog:
    """One JSON object per evaluation in metrics.jsonl, mirrored to TensorBoard scalars."""

    def __init__(self, job_dir):
        self.path = Path(job_dir) / "metrics.jsonl"
        self.writer = SummaryWriter(str(Path(job_dir) / "run"))
        self.evaluations = []  # this process's evaluation records, for the closing summary


    def record(self, phase, epoch, metrics, step=None):
        entry = {"phase": phase, "epoch": epoch, **metrics}
        if "top1" in metrics and not phase.endswith("_train"):
            self.evaluations.append(entry)
        with open(self.path, "a") as f:
            f.write(json.dumps(entry) + "\n")
        for name, value in metrics.items():
            if isinstance(value, (int, float)):
                self.writer.add_scalar(f"{phase}/{name}", value, epoch if step is None else step)
        self.writer.flush()

    def summary(self):
        lines = [f"{'phase':<10} {'epoch':>5} {'loss':>8} {'top1':>7} {'top5':>7} {'images':>7}"]
        lines += [f"{e['phase']:<10} {e['epoch']:>5} {e['loss']:>8.4f} {e['top1']:>7.2f} {e['top5']:>7.2f} "
                  f"{e['images']:>7}" for e in self.evaluations]
        return "\n".join(lines)

    def close(self):
        self.writer.close()
