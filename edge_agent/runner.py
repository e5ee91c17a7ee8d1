"""What the edge server runs: the tail of a model from a cut, behind one small interface.

The server only needs two things from a model: what a request for (model, cut) must carry (the
crossing tensors' shapes and dtypes, to validate requests before touching their buffers) and a
way to run the tail on received tensors. :class:`TailRunner` is that contract, so the server and
its tests never depend on how tails are built. :class:`CachedTailRunner` does the work common to
every runner (build each tail once, cast and move inputs, run under ``inference_mode``, hand back
CPU tensors); :class:`SplitTailRunner` builds tails with ``dnn_split``'s partitioner, which is
what ``cutedge edge`` serves.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from wire.format import Catalog, TensorSpec, check_model_id


@runtime_checkable
class TailRunner(Protocol):
    """Runs DNN tails for the edge server.

    ``catalog()`` is called once at start-up: per model id, per cut index, the tensors a request
    carries (batch-1 shapes, dim 0 = batch), or ``None`` for a cut with no tail. ``run`` may be
    called from several worker threads at once; it gets CPU tensors in the spec's order (their
    memory is the received frames) and returns the output tensors on the CPU.
    """

    def catalog(self) -> Catalog: ...

    def run(self, model: str, cut: int, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]: ...


def flatten_outputs(out: Any) -> list[torch.Tensor]:
    """A tail's output as a flat list of tensors (tensor, tuple/list, dict values, nested)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, Mapping):
        return [t for v in out.values() for t in flatten_outputs(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in flatten_outputs(v)]
    raise TypeError(f"tail returned {type(out).__name__}, expected tensors")


class CachedTailRunner:
    """Builds each (model, cut) tail once, on first use, and runs it on ``device``.

    ``build_tail(model, cut)`` returns the tail module (already on ``device``). Building is
    serialised (it is rare and the builder need not be thread-safe), so two workers asking for
    the same new tail build it once. Floating
    inputs that travelled in another float dtype (float16 to halve the uplink, say) are cast to
    the spec's dtype. On CUDA the outputs are copied back before ``run`` returns, so the time the
    server measures around ``run`` is the whole tail, transfers included.
    """

    def __init__(
        self,
        catalog: Catalog,
        build_tail: Callable[[str, int], nn.Module],
        device: str | torch.device = "cpu",
    ):
        self._catalog = {m: tuple(cuts) for m, cuts in catalog.items()}
        self._build_tail = build_tail
        self.device = torch.device(device)
        self._tails: dict[tuple[str, int], nn.Module] = {}
        self._build_lock = threading.Lock()

    def catalog(self) -> Catalog:
        return self._catalog

    def spec(self, model: str, cut: int) -> tuple[TensorSpec, ...]:
        cuts = self._catalog.get(model)
        if cuts is None or not 0 <= cut < len(cuts) or cuts[cut] is None:
            raise KeyError(f"no tail for model {model!r} cut {cut}")
        return cuts[cut]  # type: ignore[return-value]

    def tail(self, model: str, cut: int) -> nn.Module:
        """The cached tail module, built on first call."""
        key = (model, cut)
        tail = self._tails.get(key)
        if tail is not None:
            return tail
        self.spec(model, cut)
        with self._build_lock:
            tail = self._tails.get(key)
            if tail is None:
                tail = self._build_tail(model, cut)
                tail.eval()
                self._tails[key] = tail
        return tail

    @property
    def built(self) -> list[tuple[str, int]]:
        """(model, cut) pairs whose tail has been built."""
        return list(self._tails)

    def run(self, model: str, cut: int, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        spec = self.spec(model, cut)
        tail = self.tail(model, cut)
        xs = []
        for x, s in zip(inputs, spec, strict=True):
            want = getattr(torch, s.dtype)
            xs.append(x.to(self.device, dtype=want, non_blocking=False))
        with torch.inference_mode():
            outputs = flatten_outputs(tail(*xs))
        # contiguous CPU tensors: what the wire sends without a further copy
        return [o.detach().to("cpu").contiguous() for o in outputs]


@dataclass(frozen=True)
class ModelRequest:
    """One model the edge should serve: name (torchvision name or import path) and input shape."""

    name: str
    input_shape: tuple[int, ...] = (3, 224, 224)
    weights: str | os.PathLike[str] | None = None


class SplitTailRunner(CachedTailRunner):
    """Tails built by ``dnn_split``: every candidate cut of each model, by its cut index.

    The cut index on the wire is ``dnn_split``'s candidate index (``CutSpec.index``), the same on
    the device (which partitions the same model the same way); the last cut keeps the whole
    model on the device and has no tail. Weights are random with ``seed`` unless a state_dict is
    given, and must be the same on both agents for the results to mean anything.
    """

    def __init__(
        self,
        models: Sequence[ModelRequest],
        *,
        device: str | torch.device = "cpu",
        seed: int = 0,
        announce: Callable[[str], None] | None = None,
    ):
        from dnn_split.partition import partition

        self.partitions = {}
        catalog: dict[str, tuple[tuple[TensorSpec, ...] | None, ...]] = {}
        for m in models:
            check_model_id(m.name)
            part = partition(m.name, m.input_shape, weights=m.weights, seed=seed, announce=announce)
            part.to(device)
            self.partitions[m.name] = part
            last = part.last.index
            catalog[m.name] = tuple(
                None
                if c.index == last
                else tuple(TensorSpec(t.name, tuple(t.shape), t.dtype) for t in c.tensors)
                for c in part.cuts
            )
        super().__init__(catalog, self._split_tail, device)

    def _split_tail(self, model: str, cut: int) -> nn.Module:
        return self.partitions[model].tail(cut)
