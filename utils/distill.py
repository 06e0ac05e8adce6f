"""Knowledge distillation from a teacher (by default the dense model before pruning).

    loss = (1 − α) · CE(z_s, y) + α · T² · KL(p_t ‖ p_s),   p = softmax(z / T)

KL(p_t ‖ p_s) = Σ p_t (log p_t − log p_s), averaged over the batch: Hinton et al.'s soft-target
term, i.e. `F.kl_div(log_softmax(z_s/T), softmax(z_t/T))` (written KL(softmax(z_s/T) ‖ softmax(z_t/T))
in that function's argument order). T² keeps its gradient on the scale of the CE term's.
"""
import copy
import time

import torch
import torch.nn.functional as F


def kd_loss(student_logits, teacher_logits, target, alpha, temperature, criterion=F.cross_entropy):
    """(1 − α)·criterion(z_s, y) + α·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)), batch mean."""
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=1),
                    F.log_softmax(teacher_logits / temperature, dim=1), reduction="batchmean", log_target=True)
    return (1 - alpha) * criterion(student_logits, target) + alpha * temperature ** 2 * soft


class Distiller:
    """Runs the teacher (eval mode, no gradients, the student's autocast and memory format) on each
    batch and combines its logits with the labels; times the teacher's forward passes."""

    def __init__(self, teacher, alpha, temperature, criterion):
        self.teacher = teacher.eval().requires_grad_(False)
        self.alpha, self.temperature, self.criterion = alpha, temperature, criterion
        self.seconds = 0.0
        self._events = []  # CUDA: (start, end) events, read once per epoch rather than synced per step

    @classmethod
    def from_student(cls, student, alpha, temperature, criterion):
        """The teacher is a frozen copy of `student` as it is now (the dense model, before pruning)."""
        return cls(copy.deepcopy(student), alpha, temperature, criterion)

    def loss(self, student_logits, images, target):
        teacher_logits = self.teacher_logits(images)
        return kd_loss(student_logits, teacher_logits.float(), target, self.alpha, self.temperature, self.criterion)

    @torch.no_grad()
    def teacher_logits(self, images):
        self.teacher.eval()  # the caller's train() reaches only the student
        if images.is_cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            logits = self.teacher(images)
            end.record()
            self._events.append((start, end))
            return logits
        start = time.perf_counter()
        logits = self.teacher(images)
        self.seconds += time.perf_counter() - start
        return logits

    def take_seconds(self):
        """Seconds spent in the teacher since the last call (one CUDA sync at most)."""
        if self._events:
            self._events[-1][1].synchronize()
            self.seconds += sum(s.elapsed_time(e) for s, e in self._events) / 1000
            self._events = []
        seconds, self.seconds = self.seconds, 0.0
        return seconds
