"""Wire compression of the crossing tensors: sizes, round-trip error, accuracy cost per cut."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from dnn_split.compress import (
    INT8_PARAM_BYTES,
    compression_error,
    cut_nbytes,
    pack,
    packed_nbytes,
    unpack,
)
from dnn_split.partition import Partition, TensorSpec

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_split_models as tiny  # noqa: E402


def test_float16_round_trip():
    x = torch.randn(2, 8, 5, 5, generator=torch.Generator().manual_seed(0))
    p = pack(x, "float16")
    assert p.data.dtype == torch.float16
    y = unpack(p)
    assert y.dtype == torch.float32 and y.shape == x.shape
    assert float((y - x).abs().max()) <= float(x.abs().max()) * 2**-11


def test_int8_round_trip_is_within_half_a_step():
    x = torch.randn(4, 16, 7, 7, generator=torch.Generator().manual_seed(1)) * 3 + 1
    p = pack(x, "int8")
    assert p.data.dtype == torch.uint8
    step = (float(x.max()) - float(x.min())) / 255
    assert p.scale == pytest.approx(step)
    err = float((unpack(p) - x).abs().max())
    assert 0 < err <= step / 2 + 1e-6
    const = torch.full((3, 3), 2.5)
    assert torch.equal(unpack(pack(const, "int8")), const)


def test_integer_tensors_and_no_mode_pass_unchanged():
    idx = torch.arange(10)
    assert unpack(pack(idx, "int8")) is idx
    x = torch.randn(3)
    assert unpack(pack(x, None)) is x
    with pytest.raises(ValueError, match="compression 'int4'"):
        pack(x, "int4")


def test_packed_sizes():
    spec = TensorSpec("a", (1, 256, 56, 56), "float32")
    assert packed_nbytes(spec, None) == 3_211_264
    assert packed_nbytes(spec, None, "float16") == 1_605_632
    assert packed_nbytes(spec, "float16") == 1_605_632
    assert packed_nbytes(spec, "int8") == 802_816 + INT8_PARAM_BYTES
    assert packed_nbytes(TensorSpec("i", (1, 10), "int64"), "int8") == 80


def test_accuracy_cost_per_cut():
    part = Partition(tiny.tiny(), (3, 16, 16), name="tiny")
    cuts = part.cuts
    f16 = compression_error(part, cuts, "float16", inputs=3)
    i8 = compression_error(part, cuts, "int8", inputs=3)
    assert set(f16) == set(i8) == {c.index for c in cuts}
    for c in cuts:
        assert cut_nbytes(c, "int8") == sum(t.numel for t in c.tensors) + INT8_PARAM_BYTES * len(
            c.tensors
        )
        assert 0 < f16[c.index] < i8[c.index] < 0.5, c.name
