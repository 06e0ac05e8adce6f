"""Distillation: the loss against a hand computation; the teacher stays frozen and gets no gradient."""
import math

import pytest
import torch

import models
from utils.distill import Distiller, kd_loss
from utils.engine import Stepper
from utils.schedule import build_scheduler
from utils.trainer import build_optimizer
from test_training import train_args


def test_kd_loss_matches_a_hand_computation():
    student = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    teacher = torch.tensor([[2.0, 1.0, 0.0], [1.0, 0.5, 2.0]])
    target = torch.tensor([1, 2])
    alpha, T = 0.3, 2.0
    ce = kl = 0.0
    for s, t, y in zip(student.tolist(), teacher.tolist(), target.tolist()):
        ce += -(s[y] - math.log(sum(math.exp(v) for v in s)))
        p_s = [math.exp(v / T) / sum(math.exp(w / T) for w in s) for v in s]
        p_t = [math.exp(v / T) / sum(math.exp(w / T) for w in t) for v in t]
        kl += sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in zip(p_t, p_s))
    expected = (1 - alpha) * ce / 2 + alpha * T * T * kl / 2
    assert kd_loss(student, teacher, target, alpha, T).item() == pytest.approx(expected, rel=1e-6)
    assert kd_loss(student, teacher, target, 0.0, T).item() == pytest.approx(ce / 2, rel=1e-6)
    assert kd_loss(teacher, teacher, target, 1.0, T).item() == pytest.approx(0.0, abs=1e-6)


def test_teacher_gets_no_gradient_and_stays_in_eval_mode():
    torch.manual_seed(0)
    student = models.get_model("mobilenet_v2", width_mult=0.25, num_classes=4)
    distiller = Distiller.from_student(student, 0.5, 4.0, torch.nn.CrossEntropyLoss())
    teacher_before = {k: v.clone() for k, v in distiller.teacher.state_dict().items()}
    optimizer = build_optimizer(student, train_args())
    stepper = Stepper(student, torch.nn.CrossEntropyLoss(), optimizer, build_scheduler(optimizer, 2, train_args()),
                      torch.device("cpu"), scaler=torch.amp.GradScaler("cpu", enabled=False), distiller=distiller)
    student.train()
    student_before = {k: v.clone() for k, v in student.state_dict().items()}
    for _ in range(2):
        loss, correct = stepper.step(torch.randn(4, 3, 32, 32), torch.arange(4))
        assert correct is not None and math.isfinite(loss)
    assert not distiller.teacher.training
    assert all(p.grad is None and not p.requires_grad for p in distiller.teacher.parameters())
    for key, value in distiller.teacher.state_dict().items():   # BN running stats included
        assert torch.equal(value, teacher_before[key]), key
    assert any(not torch.equal(v, student_before[k]) for k, v in student.state_dict().items())
    assert distiller.take_seconds() > 0 and distiller.take_seconds() == 0
