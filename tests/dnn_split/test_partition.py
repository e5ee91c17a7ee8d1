"""The partitioner: cut bytes against real tensor sizes, the reduction rule, DAG models, the
head/tail API, FLOPs, weights and the one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from dnn_split.flops import node_flops
from dnn_split.models import ModelError, build_model, parse_input_shape
from dnn_split.partition import Partition, flatten_outputs, offered_mask, partition

pytest.importorskip("torchvision")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
import tiny_split_models as tiny  # noqa: E402


def quiet(line: str) -> None:
    pass


@pytest.fixture(scope="module")
def r50() -> Partition:
    return partition("resnet50", (3, 224, 224), announce=quiet)


def after_stage(part: Partition, stage: str):
    """The candidate cut right after the last node of module ``stage``."""
    return [c for c in part.cuts if c.module and c.module.startswith(stage + ".")][-1]


# -- bytes ---------------------------------------------------------------------------------


def test_resnet50_cut_bytes_are_the_real_tensor_sizes(r50):
    expected = {
        "input": 602_112,
        "layer1": 3_211_264,
        "layer2": 1_605_632,
        "layer3": 802_816,
        "layer4": 401_408,
    }
    cuts = {"input": r50.cuts[0]} | {
        s: after_stage(r50, s) for s in ("layer1", "layer2", "layer3", "layer4")
    }
    x = r50.example_input()
    with torch.inference_mode():
        for stage, cut in cuts.items():
            assert cut.bytes == expected[stage], stage
            assert len(cut.tensors) == 1, stage
            real = r50.head(cut)(x)
            assert sum(t.numel() * t.element_size() for t in real) == expected[stage], stage
    last = r50.last
    assert (last.name, last.bytes, len(last.tensors)) == ("fc", 4_000, 1)
    assert r50.cuts[0].name == "input" and r50.cuts[0].head_flops == 0


def test_float16_halves_float_bytes(r50):
    layer2 = after_stage(r50, "layer2")
    assert layer2.bytes_as("float16") == 1_605_632 // 2
    assert layer2.bytes_as(torch.float32) == 1_605_632


# -- the reduction -------------------------------------------------------------------------


def test_offered_mask_keeps_the_running_minimum_and_the_last_cut():
    assert offered_mask([5, 3, 3, 4, 1, 2]) == [True, True, False, False, True, True]
    assert offered_mask([1, 2, 3]) == [True, False, True]
    assert offered_mask([]) == []


def test_reduction_drops_exactly_the_dominated_cuts(r50):
    best = float("inf")
    for c in r50.cuts:
        dominated = (
            c.bytes >= best
        )  # an earlier cut sends no more bytes and runs less on the device
        assert c.offered == (not dominated or c is r50.last), c.name
        best = min(best, c.bytes)
    assert r50.dropped == len(r50.cuts) - len(r50.offered) > 0
    assert f"{r50.dropped} dropped" in r50.summary()
    heads = [c.head_flops for c in r50.cuts]
    assert heads == sorted(heads)
    assert all(c.head_flops + c.tail_flops == r50.total_flops for c in r50.cuts)


def test_googlenet_offers_only_block_boundary_cuts():
    """The rule's answer for a DAG: cuts inside Inception branches exist as candidates (2-4
    tensors cross: the block input still needed by later branches plus the finished branch
    outputs) but none sends fewer bytes than the single tensor at its block's input, an earlier
    cut, so all are dropped; every offered cut carries one tensor, at a block boundary."""
    part = partition("googlenet", (3, 224, 224), announce=quiet)
    multi = [c for c in part.cuts if len(c.tensors) > 1]
    assert max(len(c.tensors) for c in multi) == 4
    assert all(c.module and c.module.startswith("inception") for c in multi)
    assert not any(c.offered for c in multi)
    for c in part.offered:
        assert len(c.tensors) == 1
        assert c.module is None or ".branch" not in c.module, c.name
    for c in multi:
        # no more bytes: at the end of Inception 5a the four branch outputs add up to exactly
        # the block input's 832 channels, a tie, which the earlier (cheaper) cut wins
        assert any(
            e.index < c.index and len(e.tensors) == 1 and e.bytes <= c.bytes for e in part.cuts
        )


# -- the head/tail API ---------------------------------------------------------------------


def test_head_and_tail_hold_only_their_side_and_are_cached():
    part = Partition(tiny.tiny(), (3, 16, 16), name="tiny")
    skip = next(c for c in part.cuts if len(c.tensors) == 2)
    assert [t.name for t in skip.tensors][0] == "stem_2"  # the skip tensor, produced first
    head, tail = part.head(skip), part.tail(skip)
    assert part.head(skip.index) is head and part.tail(skip.name) is tail
    head_params = {n for n, _ in head.named_parameters()}
    tail_params = {n for n, _ in tail.named_parameters()}
    assert head_params and all(n.startswith(("stem.", "branch.")) for n in head_params)
    assert "fc.weight" in tail_params and not any(n.startswith("stem.") for n in tail_params)
    # the parameter used directly in forward (fx get_attr) is copied to the side that needs it
    assert "scale" in tail_params
    x = part.example_input(batch=3)
    with torch.inference_mode():
        torch.testing.assert_close(tail(*head(x)), part.model(x), rtol=1e-6, atol=1e-6)
    with pytest.raises(ModelError, match="out of range"):
        part.cut(len(part.cuts))
    with pytest.raises(ModelError, match="no cut named"):
        part.cut("nope")


def test_tuple_output_keeps_its_structure():
    part = Partition(tiny.two_heads(), (3, 16, 16), name="two_heads")
    assert len(part.last.tensors) == 2
    x = part.example_input()
    with torch.inference_mode():
        ref = part.model(x)
        for c in part.cuts:
            out = part.run_split(c, x)
            assert isinstance(out, tuple) and len(out) == 2
            for a, b in zip(flatten_outputs(out), flatten_outputs(ref), strict=True):
                torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "name,shape", [("mobilenet_v3_small", (3, 64, 64)), ("googlenet", (3, 15, 15))]
)
def test_meta_shape_pass_matches_a_real_forward(name, shape):
    model = build_model(name, announce=quiet)
    fast = Partition(model, shape, name=name)
    real = Partition(model, shape, name=name, shapes="real")
    assert [(c.name, c.tensors, c.head_flops, c.offered) for c in fast.cuts] == [
        (c.name, c.tensors, c.head_flops, c.offered) for c in real.cuts
    ]
    assert all(p.device.type == "cpu" for p in model.parameters())  # meta stand-ins removed
    assert all(b.device.type == "cpu" for b in model.buffers())


# -- FLOPs ---------------------------------------------------------------------------------


def _conv_linear_flops(part: Partition) -> int:
    gm = part.graph_module
    return sum(
        node_flops(gm, n)
        for n in gm.graph.nodes
        if n.op == "call_module"
        and isinstance(gm.get_submodule(str(n.target)), (nn.Conv2d, nn.Linear))
    )


def test_conv_and_linear_flops_match_a_hook_count():
    """An independent count from forward hooks on the real tensors (2 FLOPs per MAC + bias)."""
    model = build_model("resnet18", announce=quiet)
    part = Partition(model, (3, 64, 64), name="resnet18")
    total = 0

    def hook(mod, args, out):
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        else:
            k = mod.in_features
        total += 2 * out.numel() * k + (out.numel() if mod.bias is not None else 0)

    hooks = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    with torch.inference_mode():
        model(part.example_input())
    for h in hooks:
        h.remove()
    assert _conv_linear_flops(part) == total


@pytest.mark.parametrize("name", ["mobilenet_v2", "googlenet", "efficientnet_b0"])
def test_flops_match_torchvision_published_ops(name, r50):
    """torchvision lists each model's GMACs at 224x224 (weights meta ``_ops``)."""
    from torchvision.models import get_model_weights

    for model_name, part in (
        ("resnet50", r50),
        (name, partition(name, (3, 224, 224), announce=quiet)),
    ):
        gmacs = next(iter(get_model_weights(model_name))).meta["_ops"]
        assert _conv_linear_flops(part) / 2e9 == pytest.approx(gmacs, rel=5e-3), model_name
        assert part.total_flops >= _conv_linear_flops(part)


# -- errors --------------------------------------------------------------------------------


def test_untraceable_model_names_the_module_and_the_op():
    with pytest.raises(ModelError) as err:
        Partition(tiny.untraceable(), (3, 8, 8), name="tiny_split_models:untraceable")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("tiny_split_models:untraceable: torch.fx cannot trace")
    assert "module 'post.1' (Gate.forward)" in msg
    assert "if x.mean() > 0:" in msg and "control flow" in msg


def test_input_too_small_is_one_line_naming_the_node():
    with pytest.raises(ModelError) as err:
        partition("googlenet", (3, 8, 8), announce=quiet)
    msg = str(err.value)
    assert "\n" not in msg and "[3, 8, 8]" in msg and "maxpool3" in msg


def test_model_names_and_factories():
    with pytest.raises(ModelError, match="unknown model 'resnet5000'"):
        build_model("resnet5000", announce=quiet)
    with pytest.raises(ModelError, match="cannot import"):
        build_model("no_such_module_xyz:make", announce=quiet)
    with pytest.raises(ModelError, match="has no attribute"):
        build_model("tiny_split_models:nope", announce=quiet)
    with pytest.raises(ModelError, match="neither an nn.Module nor callable"):
        build_model("tiny_split_models:not_a_module", announce=quiet)
    with pytest.raises(ModelError, match="tried to download https://example.invalid"):
        build_model("tiny_split_models:downloading", announce=quiet)
    assert isinstance(build_model("tiny_split_models:tiny", announce=quiet), tiny.TinyNet)
    assert parse_input_shape("3,224,224") == (3, 224, 224)
    for bad in ("3,a,4", "", "3,0,4", "-1"):
        with pytest.raises(ModelError, match="input shape"):
            parse_input_shape(bad)


# -- weights -------------------------------------------------------------------------------


def test_random_weights_are_seeded_and_announced():
    lines: list[str] = []
    a = build_model("resnet18", seed=3, announce=lines.append)
    b = build_model("resnet18", seed=3, announce=quiet)
    c = build_model("resnet18", seed=4, announce=quiet)
    assert lines == ["resnet18: random weights (seed 3); pass --weights FILE for trained ones"]
    assert torch.equal(a.conv1.weight, b.conv1.weight)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


def test_weights_file_is_loaded_and_mismatches_are_one_line(tmp_path):
    trained = build_model("tiny_split_models:tiny", seed=11, announce=quiet)
    path = tmp_path / "tiny.pt"
    torch.save({"state_dict": trained.state_dict()}, path)
    lines: list[str] = []
    loaded = build_model("tiny_split_models:tiny", weights=path, announce=lines.append)
    assert torch.equal(loaded.fc.weight, trained.fc.weight)
    assert lines == [f"tiny_split_models:tiny: weights from {path}"]

    with pytest.raises(ModelError) as err:
        build_model("tiny_split_models:untraceable", weights=path, announce=quiet)
    assert str(err.value).startswith(
        f"{path}: state_dict does not fit"
    ) and "missing conv.weight" in str(err.value)

    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match="cannot read weights"):
        build_model("tiny_split_models:tiny", weights=bad, announce=quiet)
    with pytest.raises(ModelError, match="weights file not found"):
        build_model("tiny_split_models:tiny", weights=tmp_path / "absent.pt", announce=quiet)


def test_controller_never_imports_torch():
    code = "import sys, controller.profiles; assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
