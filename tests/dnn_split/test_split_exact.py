"""tail(*head(x)) == model(x) for every offered cut of every listed model (eval, float32).

Inputs are as small as each model allows, to keep this file fast: 64x64 for most, 15x15 for
GoogLeNet (the smallest its five stride-2 stages accept; 14x14 fails in maxpool3) and 75x75 for
Inception-v3 (torchvision's documented minimum; 74x74 fails).
"""

from __future__ import annotations

import pytest
import torch

from dnn_split.partition import flatten_outputs, partition

pytest.importorskip("torchvision")

MODELS = {
    "resnet18": (3, 64, 64),
    "resnet50": (3, 64, 64),
    "mobilenet_v2": (3, 64, 64),
    "mobilenet_v3_small": (3, 64, 64),
    "vgg16": (3, 64, 64),
    "googlenet": (3, 15, 15),
    "efficientnet_b0": (3, 64, 64),
    "inception_v3": (3, 75, 75),
}

RTOL, ATOL = 1e-5, 1e-6


def _assert_exact(part, cuts, x):
    with torch.inference_mode():
        ref = flatten_outputs(part.model(x))
        for c in cuts:
            sent = part.head(c)(x)
            assert isinstance(sent, tuple) and len(sent) == len(c.tensors), c.name
            for t, spec in zip(sent, c.tensors, strict=True):
                assert tuple(t.shape) == (x.shape[0], *spec.shape[1:]), (c.name, spec.name)
                assert str(t.dtype) == f"torch.{spec.dtype}"
            got = flatten_outputs(part.tail(c)(*sent))
            assert len(got) == len(ref)
            for a, b in zip(got, ref, strict=True):
                torch.testing.assert_close(
                    a, b, rtol=RTOL, atol=ATOL, msg=f"{part.name} cut {c.index} {c.name}"
                )


@pytest.mark.parametrize("name", list(MODELS))
def test_every_offered_cut_is_exact(name):
    part = partition(name, MODELS[name], announce=lambda line: None)
    assert part.offered[0].index == 0 and part.offered[-1] is part.last
    x = part.example_input(batch=2, seed=7)  # batch 2: cuts do not bake in the traced batch
    _assert_exact(part, part.offered, x)


def test_every_candidate_cut_is_exact_resnet18():
    """Dropped cuts too: inside a residual block two tensors cross (the skip and the branch)."""
    part = partition("resnet18", MODELS["resnet18"], announce=lambda line: None)
    assert max(len(c.tensors) for c in part.cuts) == 2
    _assert_exact(part, part.cuts, part.example_input(seed=3))


def test_multi_tensor_cuts_in_inception_blocks_are_exact():
    """Every candidate cut up to maxpool3: the stem and Inception 3a/3b, whose open branches
    send 2, 3 or 4 tensors (the rest of GoogLeNet repeats the pattern; kept out for time)."""
    part = partition("googlenet", MODELS["googlenet"], announce=lambda line: None)
    upto = part.cut("maxpool3").index
    cuts = part.cuts[: upto + 1]
    assert {len(c.tensors) for c in cuts} == {1, 2, 3, 4}
    _assert_exact(part, cuts, part.example_input(seed=3))
