"""Our models reproduce the authors' state_dict layouts exactly, and build from the registry."""
import pytest
import torch

import models
from conftest import ARCHS, layout
from utils.pruning import CONV_TYPES, masked_convs


def test_registry_lists_the_mobilenets_and_resnets():
    assert models.list_models() == sorted(ARCHS + ["resnet18", "resnet34", "resnet50"])
    with pytest.raises(ValueError, match="--arch"):
        models.get_model("resnet101")
    with pytest.raises(ValueError, match="--conv_type"):
        models.get_model("mobilenet_v2", conv_type="Nope")


@pytest.mark.parametrize("arch", ARCHS)
def test_state_dict_keys_and_shapes_equal_the_reference(arch):
    reference = layout(arch)
    model = models.get_model(arch)
    assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == reference["state_dict"]
    assert [name for name, _ in masked_convs(model)] == [m["module"] for m in reference["masked_modules"]]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("conv_type", list(CONV_TYPES))
def test_width_reduced_models_run_every_conv_type(arch, conv_type):
    model = models.get_model(arch, conv_type=conv_type, num_classes=7, width_mult=0.25).eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
