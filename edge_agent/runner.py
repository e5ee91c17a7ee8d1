"""What the edge server runs: the tail of a model from a cut, behind one small interface.

The server only needs two things from a model: what a request for (model, cut) must carry (the
crossing tensors' shapes and dtypes, to validate requests before touching their buffers) and a
way to run the tail on received tensors. :class:`TailRunner` is that contract, so the server and
its tests never depend on how tails are built. :class:`CachedTailRunner` does the work common to
every runner (build each tail once, cast and move inputs, run under ``inference_mode``, hand back
CPU tensors); :class:`SplitTailRunner` builds tails with ``dnn_split``'s partitioner, which is
what ``cutedge edge`` serves.

Batching: the server may hand a runner several requests for the same (model, cut) at once
(``run_batch``), from different devices; :class:`CachedTailRunner` stacks them along dim 0,
runs the tail once and splits the outputs back. A runner without ``run_batch`` (the protocol
only requires ``run``) is served one request at a time.
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


@runtime_checkable
class BatchTailRunner(TailRunner, Protocol):
    """A :class:`TailRunner` that can also run several requests of one (model, cut) at once.

    ``run_batch(model, cut, batch)`` gets one input list per request (each as ``run`` gets it;
    their dim 0 may differ) and returns one output list per request, in order, each as ``run``
    would have returned it for that request alone. It raises if it cannot (the server then runs
    the requests one by one, so one bad request fails alone).
    """

    def run_batch(
        self, model: str, cut: int, batch: Sequence[Sequence[torch.Tensor]]
    ) -> list[list[torch.Tensor]]: ...


def split_outputs(outputs: Sequence[torch.Tensor], rows: Sequence[int]) -> list[list[torch.Tensor]]:
    """Per-request outputs of a stacked run: every output split along dim 0 by ``rows``.

    An output whose dim 0 is not the batch's rows (a tail that reduces over the batch, say)
    cannot be split: ValueError. The pieces are views, C-contiguous as the wire wants them.
    """
    total = sum(rows)
    for i, o in enumerate(outputs):
        if o.dim() == 0 or o.shape[0] != total:
            raise ValueError(
                f"output {i} has shape {list(o.shape)}, not [{total}, ...]: cannot split a batch"
            )
    parts = [o.contiguous().split(list(rows)) for o in outputs]
    return [[p[j] for p in parts] for j in range(len(rows))]


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

    ``run_batch`` stacks requests along dim 0 (casting each to the spec's dtype as it goes) and
    splits the outputs. On CUDA each worker thread gets its own stream and its own pinned
    (page-locked) host staging buffers, so the host-to-device copies of one worker overlap the
    kernels of another, and no worker waits on a copy another stream queued. Outputs come back
    into fresh pinned tensors (the server sends them zero-copy while the next batch runs, so a
    reused output buffer could be overwritten under ZeroMQ); torch's caching host allocator makes
    those cheap. Nothing here touches CUDA when ``device`` is the CPU.
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
        self._local = threading.local()  # per worker thread: CUDA stream, pinned input buffers

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

    def run_batch(
        self, model: str, cut: int, batch: Sequence[Sequence[torch.Tensor]]
    ) -> list[list[torch.Tensor]]:
        """One tail call for several requests of (model, cut); see :class:`BatchTailRunner`."""
        if len(batch) == 1 and self.device.type != "cuda":
            return [self.run(model, cut, batch[0])]  # no copy into a stacked tensor
        spec = self.spec(model, cut)
        tail = self.tail(model, cut)
        for j, inputs in enumerate(batch):  # refuse before copying anything
            if len(inputs) != len(spec):
                raise ValueError(f"request {j} has {len(inputs)} tensors, the cut sends {len(spec)}")
        rows = [int(inputs[0].shape[0]) for inputs in batch]
        if self.device.type == "cuda":
            return self._run_batch_cuda(tail, spec, batch, rows)
        xs = []
        for i, s in enumerate(spec):
            want = getattr(torch, s.dtype)
            xs.append(torch.cat([inputs[i].to(want) for inputs in batch]))
        with torch.inference_mode():
            outputs = flatten_outputs(tail(*xs))
        return split_outputs([o.detach().contiguous() for o in outputs], rows)

    def _run_batch_cuda(
        self,
        tail: nn.Module,
        spec: Sequence[TensorSpec],
        batch: Sequence[Sequence[torch.Tensor]],
        rows: list[int],
    ) -> list[list[torch.Tensor]]:
        local = self._local
        stream = getattr(local, "stream", None)
        if stream is None:
            stream = local.stream = torch.cuda.Stream(self.device)
            local.staging = {}
        total = sum(rows)
        xs = []
        with torch.cuda.stream(stream):
            for i, s in enumerate(spec):
                want = getattr(torch, s.dtype)
                shape = (total, *batch[0][i].shape[1:])
                key = (i, want, shape[1:])
                buf = local.staging.get(key)
                if buf is None or buf.shape[0] < total:
                    # pinned memory lets the copy below run asynchronously on this stream; the
                    # buffer is reused by the next batch, after this one's synchronize
                    buf = torch.empty(shape, dtype=want, pin_memory=True)
                    local.staging[key] = buf
                at = 0
                for inputs, n in zip(batch, rows, strict=True):
                    buf[at : at + n].copy_(inputs[i])  # casts to the tail's dtype
                    at += n
                xs.append(buf[:total].to(self.device, non_blocking=True))
            with torch.inference_mode():
                outputs = flatten_outputs(tail(*xs))
            host = []
            for o in outputs:
                h = torch.empty(o.shape, dtype=o.dtype, pin_memory=True)
                h.copy_(o.detach(), non_blocking=True)
                host.append(h)
        stream.synchronize()
        return split_outputs(host, rows)


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
