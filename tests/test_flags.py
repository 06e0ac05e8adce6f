"""Defaults and warnings that depend on the machine or the model: --workers, --N."""
import os

import pytest

import imagenet
from imagenet import get_args_parser, main


@pytest.mark.parametrize("cores,expected", [(2, 2), (1, 1), (64, 4)])
def test_default_workers_never_exceed_the_cores(cores, expected, monkeypatch):
    """DataLoader warns when num_workers exceeds the cores this process may use (a 2-core laptop)."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    assert imagenet.get_args_parser().get_default("workers") == expected


def test_N_wider_than_every_prunable_layer_warns(tiny_data, tmp_path):
    argv = ["--data_path", str(tiny_data), "--job_dir", str(tmp_path / "job"), "--img_size", "32", "--workers", "0",
            "--arch", "mobilenet_v3_small", "--num_epochs", "0", "--N", "2048"]
    with pytest.warns(UserWarning, match=r"--N 2048 exceeds the output channels of every prunable layer "
                                         r"\(at most 576\)"):
        main(get_args_parser().parse_args(argv))


def test_N_within_the_widest_layer_does_not_warn(tiny_data, tmp_path, recwarn):
    argv = ["--data_path", str(tiny_data), "--job_dir", str(tmp_path / "job"), "--img_size", "32", "--workers", "0",
            "--arch", "mobilenet_v3_small", "--num_epochs", "0", "--N", "576", "--conv_type", "BlockRandomConv"]
    main(get_args_parser().parse_args(argv))
    assert not [w for w in recwarn if "--N" in str(w.message)]
