"""Tail runners: the catalog the server validates against, caching, casting, outputs."""

from __future__ import annotations

import threading

import pytest
import torch
from edge_tinynet import INPUT_SHAPE, MODEL
from torch import nn

from edge_agent.runner import (
    CachedTailRunner,
    ModelRequest,
    SplitTailRunner,
    TailRunner,
    flatten_outputs,
)
from wire.format import TensorSpec


@pytest.fixture(scope="module")
def runner():
    return SplitTailRunner([ModelRequest(MODEL, INPUT_SHAPE)], announce=lambda line: None)


def test_split_runner_catalog_follows_the_partitioner(runner):
    assert isinstance(runner, TailRunner)
    part = runner.partitions[MODEL]
    cuts = runner.catalog()[MODEL]
    assert len(cuts) == len(part.cuts)
    assert cuts[-1] is None  # last cut: the whole model on the device
    for spec, cut in zip(cuts[:-1], part.cuts[:-1]):
        assert spec == tuple(TensorSpec(t.name, t.shape, t.dtype) for t in cut.tensors)
    assert len(cuts[3]) == 2  # inside the residual block two tensors cross


def test_split_runner_output_equals_the_model(runner):
    part = runner.partitions[MODEL]
    x = part.example_input(batch=2, seed=1)
    with torch.inference_mode():
        want = part.model(x)
        for cut in (0, 3, 8):
            out = runner.run(MODEL, cut, list(part.head(cut)(x)))
            assert len(out) == 1 and out[0].device.type == "cpu" and out[0].is_contiguous()
            torch.testing.assert_close(out[0], want, rtol=1e-5, atol=1e-6)
    assert {(MODEL, 0), (MODEL, 3), (MODEL, 8)} <= set(runner.built)


def test_half_precision_inputs_are_cast_to_the_tail_dtype(runner):
    part = runner.partitions[MODEL]
    with torch.inference_mode():
        sent = part.head(3)(part.example_input(seed=2))
        out = runner.run(MODEL, 3, [t.half() for t in sent])
        want = part.tail(3)(*[t.half().float() for t in sent])
    assert out[0].dtype == torch.float32
    torch.testing.assert_close(out[0], want)


def test_unknown_model_or_tailless_cut_is_a_key_error(runner):
    with pytest.raises(KeyError):
        runner.run("nope", 0, [])
    with pytest.raises(KeyError):
        runner.run(MODEL, len(runner.catalog()[MODEL]) - 1, [])


def test_each_tail_is_built_once_even_under_concurrent_first_use():
    builds = []
    gate = threading.Event()

    def build(model, cut):
        builds.append((model, cut))
        gate.wait(1)
        return nn.Linear(4, 2)

    spec = (TensorSpec("x", (1, 4), "float32"),)
    r = CachedTailRunner({"m": (spec, spec, None)}, build)
    outs = []
    threads = [
        threading.Thread(target=lambda: outs.append(r.run("m", 1, [torch.ones(1, 4)])))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join()
    assert builds == [("m", 1)]
    assert len(outs) == 8 and all(torch.equal(o[0], outs[0][0]) for o in outs)


def test_flatten_outputs():
    a, b, c = torch.zeros(1), torch.ones(2), torch.full((3,), 2.0)
    assert [t.shape for t in flatten_outputs({"x": a, "y": (b, [c])})] == [(1,), (2,), (3,)]
    with pytest.raises(TypeError, match="expected tensors"):
        flatten_outputs(3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_runner_matches_the_cpu_one(runner):
    gpu = SplitTailRunner(
        [ModelRequest(MODEL, INPUT_SHAPE)], device="cuda", announce=lambda line: None
    )
    part = runner.partitions[MODEL]
    x = part.example_input(batch=4, seed=6)
    with torch.inference_mode():
        for cut in (0, 3, 8):
            sent = list(part.head(cut)(x))
            got = gpu.run(MODEL, cut, sent)
            assert got[0].device.type == "cpu"
            torch.testing.assert_close(
                got[0], runner.run(MODEL, cut, sent)[0], rtol=1e-3, atol=1e-4
            )


def test_run_batch_equals_run_per_request(runner):
    part = runner.partitions[MODEL]
    with torch.inference_mode():
        batch = [list(part.head(3)(part.example_input(batch=b, seed=b))) for b in (1, 2, 1)]
        batch[1] = [t.half() for t in batch[1]]  # travelled as float16: cast before stacking
        got = runner.run_batch(MODEL, 3, batch)
        assert [len(g) for g in got] == [1, 1, 1]
        for inputs, out in zip(batch, got):
            assert out[0].shape[0] == inputs[0].shape[0] and out[0].is_contiguous()
            torch.testing.assert_close(out[0], runner.run(MODEL, 3, inputs)[0], rtol=1e-4, atol=1e-5)


def test_run_batch_refuses_outputs_it_cannot_split():
    spec = (TensorSpec("x", (1, 4), "float32"),)

    class Sum(nn.Module):
        def forward(self, x):
            return x.sum()

    r = CachedTailRunner({"m": (spec, None)}, lambda m, c: Sum())
    with pytest.raises(ValueError, match="cannot split"):
        r.run_batch("m", 0, [[torch.ones(1, 4)], [torch.ones(1, 4)]])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_run_batch_uses_a_stream_per_thread_and_matches_the_cpu(runner):
    gpu = SplitTailRunner(
        [ModelRequest(MODEL, INPUT_SHAPE)], device="cuda", announce=lambda line: None
    )
    part = runner.partitions[MODEL]
    with torch.inference_mode():
        batch = [list(part.head(3)(part.example_input(batch=b, seed=10 + b))) for b in (1, 3, 2)]
    results, streams = {}, {}

    def work(name):
        results[name] = [gpu.run_batch(MODEL, 3, batch) for _ in range(3)][-1]
        streams[name] = gpu._local.stream

    threads = [threading.Thread(target=work, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert streams["a"] is not streams["b"]
    for name in ("a", "b"):
        for inputs, out in zip(batch, results[name]):
            assert out[0].device.type == "cpu" and out[0].is_pinned()
            torch.testing.assert_close(
                out[0], runner.run(MODEL, 3, inputs)[0], rtol=1e-3, atol=1e-4
            )
