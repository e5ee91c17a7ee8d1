"""Split a PyTorch model into a head (runs on the board) and a tail (runs on the edge server).

How cuts are found. torch.fx captures the model's graph; its node list is one topological order.
A *cut* is a position ``i`` in that order: the head runs the first ``i`` compute nodes, the tail
the rest. The tensors that cross cut ``i`` are every value produced at or before ``i`` (the input
counts as produced at 0) and used after it, so a skip connection or an open branch adds its
tensor to the cut: that is what makes a cut inside a ResNet block or an Inception module
expensive. Cut 0 sends the input; the last cut sends only the model's output.

Input-independent nodes (parameters fetched with ``get_attr`` and anything computed from them
alone) never cross: each side recomputes them where it uses them. A position where a non-tensor
value (a shape, an int) would cross cannot be sent over the wire and is not a candidate.

Which cuts are offered. A later cut always runs more of the model on the device (the heads are
nested), so a cut that does not send strictly fewer bytes than every earlier cut gives the
controller nothing: same or more uplink traffic for more device work. The reduction keeps the
running minimum of bytes along the order, plus the last cut (local-only, nothing sent per
frame), and reports how many it dropped.

Module layout for the agents: ``Partition.head(cut)`` and ``Partition.tail(cut)`` build (and
cache) ``fx.GraphModule``s that hold only their own side's parameters. The head returns a tuple
of the crossing tensors in the order of ``CutSpec.tensors``, which is the wire order; the tail
takes them as positional arguments: ``tail(*head(x)) == model(x)``.
"""

from __future__ import annotations

import math
import os
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from dnn_split.flops import META_KEY, node_flops
from dnn_split.models import DEFAULT_SEED, ModelError, build_model

_COMPUTE_OPS = ("call_module", "call_function", "call_method")
_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_HERE = os.path.dirname(os.path.abspath(__file__)) + os.sep


@dataclass(frozen=True)
class TensorSpec:
    """One tensor that crosses a cut: fx value name, shape (batch first, as traced) and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.torch_dtype.itemsize

    def nbytes_as(self, dtype: str | torch.dtype | None) -> int:
        """Bytes when floating-point tensors travel as ``dtype`` (integer tensors keep theirs)."""
        if dtype is None or not self.torch_dtype.is_floating_point:
            return self.nbytes
        dt = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        return self.numel * dt.itemsize


@dataclass(frozen=True)
class CutSpec:
    """One candidate cut.

    ``index`` numbers the candidates (0 = send the input); ``position`` is how many compute
    nodes of the graph the head runs; ``name`` is the graph node the cut follows (``input`` for
    cut 0) and ``module`` the module path that node belongs to, when it has one.
    """

    index: int
    name: str
    module: str | None
    position: int
    tensors: tuple[TensorSpec, ...]
    head_flops: int
    tail_flops: int
    offered: bool

    @property
    def bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    def bytes_as(self, dtype: str | torch.dtype | None) -> int:
        return sum(t.nbytes_as(dtype) for t in self.tensors)


def offered_mask(cut_bytes: Sequence[int]) -> list[bool]:
    """Which cuts to offer: each must send strictly fewer bytes than every earlier one.

    Cuts are in topological order, so a later cut always runs more of the model on the device;
    one that also sends as many bytes or more is dominated. The last cut (whole model on the
    device, the result stays there) is always offered.
    """
    best = math.inf
    mask = []
    for b in cut_bytes:
        keep = b < best
        best = min(best, b)
        mask.append(keep)
    if mask:
        mask[-1] = True
    return mask


# -- tracing ---------------------------------------------------------------------------------


class _PathTracer(fx.Tracer):
    """An fx tracer that remembers the innermost module whose forward failed to trace."""

    def __init__(self) -> None:
        super().__init__()
        self.failed_in: tuple[str, str] | None = None

    def call_module(self, m, forward, args, kwargs):
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                try:
                    path = self.path_of_module(m)
                except Exception:
                    path = "?"
                self.failed_in = (path, type(m).__name__)
            raise


def _user_frame(exc: BaseException) -> str | None:
    """``file:line `code``` of the deepest frame outside torch: where the model's code failed."""
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not f.filename.startswith((_TORCH_DIR, _HERE))
    ]
    if not frames:
        return None
    f = frames[-1]
    code = f" `{f.line.strip()}`" if f.line else ""
    return f"{os.path.basename(f.filename)}:{f.lineno}{code}"


def _one_line(exc: BaseException) -> str:
    """The exception's first line; a long one is cut at a sentence end before 200 characters."""
    lines = str(exc).strip().splitlines()
    text = lines[0].strip() if lines else ""
    if len(text) > 200:
        cut = text.rfind(". ", 0, 200)
        text = text[: cut + 1] if cut > 40 else text[:197] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def trace(model: nn.Module, name: str) -> fx.GraphModule:
    """Capture ``model`` with torch.fx; fail with a one-line :class:`ModelError` naming the op."""
    tracer = _PathTracer()
    try:
        graph = tracer.trace(model)
    except Exception as exc:
        where = f"{type(model).__name__}.forward"
        if tracer.failed_in is not None:
            path, cls = tracer.failed_in
            where = f"module '{path}' ({cls}.forward)" if path else f"{cls}.forward"
        frame = _user_frame(exc)
        at = f" at {frame}" if frame else ""
        raise ModelError(f"{name}: torch.fx cannot trace {where}{at}: {_one_line(exc)}") from None
    root_name = type(model).__name__
    return fx.GraphModule(tracer.root, graph, root_name)


# modules whose output has the shape and dtype of their single input (in eval mode)
_SHAPE_KEEPING = (
    nn.modules.batchnorm._NormBase,
    nn.ReLU,
    nn.ReLU6,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.GELU,
    nn.LeakyReLU,
    nn.ELU,
    nn.Mish,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
)


class _Recorder(fx.Interpreter):
    """Runs the graph once and stores each value's shape and dtype (or None) in node.meta.

    ``meta=True`` runs on the meta device: every op computes only its output's shape and dtype,
    so tracing a large model at 224x224 costs milliseconds instead of a full forward pass. The
    parameters and buffers of the called modules are swapped for meta copies (shape only, no
    memory) for the duration of the run and restored afterwards.
    """

    def __init__(self, gm: fx.GraphModule, meta: bool):
        super().__init__(gm)
        self.meta = meta
        self.failed: fx.Node | None = None

    def run_node(self, n: fx.Node) -> Any:
        try:
            result = super().run_node(n)
        except Exception:
            self.failed = self.failed or n
            raise
        n.meta[META_KEY] = (
            TensorSpec(n.name, tuple(result.shape), str(result.dtype).removeprefix("torch."))
            if isinstance(result, torch.Tensor)
            else None
        )
        return result

    def call_module(self, target, args, kwargs):
        mod = self.fetch_attr(target)
        # meta batch_norm and several activations run as slow Python decompositions; these
        # layers keep their input's shape and dtype, which is all this pass needs
        if self.meta and isinstance(mod, _SHAPE_KEEPING) and not mod.training:
            if len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor):
                return torch.empty_like(args[0])
        return super().call_module(target, args, kwargs)

    def get_attr(self, target, args, kwargs):
        value = super().get_attr(target, args, kwargs)
        if self.meta and isinstance(value, torch.Tensor):
            return torch.empty_like(value, device="meta")
        return value

    def record(self, x: torch.Tensor) -> None:
        if not self.meta:
            with torch.inference_mode():
                self.run(x)
            return
        saved = []
        try:
            for n in self.module.graph.nodes:
                if n.op != "call_module":
                    continue
                mod = self.module.get_submodule(str(n.target))
                saved.append((mod, mod._parameters, mod._buffers))
                mod._parameters = {
                    k: None
                    if v is None
                    else nn.Parameter(torch.empty_like(v, device="meta"), v.requires_grad)
                    for k, v in mod._parameters.items()
                }
                mod._buffers = {
                    k: None if v is None else torch.empty_like(v, device="meta")
                    for k, v in mod._buffers.items()
                }
            with torch.inference_mode():
                self.run(x.to("meta"))
        finally:
            for mod, params, buffers in reversed(saved):
                mod._parameters, mod._buffers = params, buffers


def _module_of(node: fx.Node) -> str | None:
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack")
    if stack:
        return str(list(stack.values())[-1][0])
    return None


# -- the partition ---------------------------------------------------------------------------


class Partition:
    """Every candidate cut of one model for one input shape, and head/tail modules per cut.

    ``model`` is put in eval mode and traced once; heads and tails share its parameters (they
    are views of the traced module, not copies), so :meth:`to` moves them all.

    Shapes come from one pass over the graph: on the meta device by default (no compute; the
    model's parameters are swapped for meta stand-ins during that pass, so do not run the same
    model object in another thread while a Partition of it is being built), or a real forward
    pass with ``shapes="real"``, which is also the fallback when an op has no meta kernel.
    """

    def __init__(
        self,
        model: nn.Module,
        input_shape: Sequence[int],
        *,
        name: str | None = None,
        seed: int = DEFAULT_SEED,
        shapes: str = "meta",
    ):
        if shapes not in ("meta", "real"):
            raise ValueError(f"shapes must be 'meta' or 'real', got {shapes!r}")
        self.shapes = shapes
        self.name = name or type(model).__name__
        self.model = model.eval()
        self.input_shape = tuple(int(d) for d in input_shape)
        self.seed = seed
        self.graph_module = trace(self.model, self.name)
        self._heads: dict[int, fx.GraphModule] = {}
        self._tails: dict[int, fx.GraphModule] = {}
        self._analyse()

    # -- analysis ----------------------------------------------------------------------------
    def example_input(self, batch: int = 1, seed: int | None = None) -> torch.Tensor:
        """A seeded random input of the partition's shape (float32, CPU)."""
        gen = torch.Generator().manual_seed(self.seed if seed is None else seed)
        return torch.randn((batch, *self.input_shape), generator=gen)

    def _analyse(self) -> None:
        gm = self.graph_module
        graph = gm.graph
        graph.eliminate_dead_code()
        gm.recompile()
        placeholders = [n for n in graph.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            names = ", ".join(n.name for n in placeholders)
            raise ModelError(
                f"{self.name}: forward must take exactly one input tensor, "
                f"takes {len(placeholders)} ({names})"
            )
        self._input = placeholders[0]
        self._output = next(n for n in graph.nodes if n.op == "output")
        # meta first (fast); an op without a meta kernel falls back to a real forward pass
        recorded = False
        if self.shapes == "meta":
            try:
                _Recorder(gm, meta=True).record(self.example_input())
                recorded = True
            except Exception:
                recorded = False
        if not recorded:
            recorder = _Recorder(gm, meta=False)
            try:
                recorder.record(self.example_input())
            except Exception as exc:
                at = f" at node '{recorder.failed.name}'" if recorder.failed is not None else ""
                raise ModelError(
                    f"{self.name}: running it on input shape {list(self.input_shape)} failed{at}: "
                    f"{_one_line(exc)}"
                ) from None

        # input-independent values are recomputed on each side, never sent
        self._const: set[fx.Node] = set()
        for n in graph.nodes:
            if n.op == "get_attr" or (
                n.op in _COMPUTE_OPS and all(a in self._const for a in n.all_input_nodes)
            ):
                self._const.add(n)
        order = [n for n in graph.nodes if n.op in _COMPUTE_OPS and n not in self._const]
        self._order = order
        k = len(order)
        pos = {self._input: 0} | {n: i + 1 for i, n in enumerate(order)}
        expire: dict[int, list[fx.Node]] = {}
        for v, p in pos.items():
            last = max((pos.get(u, k + 1) for u in v.users), default=p)
            expire.setdefault(last, []).append(v)
            v.meta["cutedge_last_use"] = last

        flops = [0] + [node_flops(gm, n) for n in order]
        total = sum(flops)
        self.total_flops = total
        live: dict[fx.Node, None] = {}
        head = 0
        raw: list[tuple[int, fx.Node, tuple[fx.Node, ...], int]] = []
        self.unsplittable = 0
        for i, v in enumerate([self._input, *order]):
            head += flops[i]
            if v.meta["cutedge_last_use"] > i:
                live[v] = None
            for gone in expire.get(i, ()):
                live.pop(gone, None)
            crossing = tuple(live)
            if all(c.meta.get(META_KEY) is not None for c in crossing):
                raw.append((i, v, crossing, head))
            else:
                self.unsplittable += 1
        if not raw or raw[-1][0] != k:
            bad = [c.name for c in self._output.all_input_nodes if c.meta.get(META_KEY) is None]
            what = ", ".join(bad) or "output"
            raise ModelError(f"{self.name}: the model's output must be tensors; {what} is not")
        sizes = [sum(c.meta[META_KEY].nbytes for c in crossing) for _, _, crossing, _ in raw]
        mask = offered_mask(sizes)
        cuts = []
        for index, ((p, node, crossing, head_flops), keep) in enumerate(
            zip(raw, mask, strict=True)
        ):
            cuts.append(
                CutSpec(
                    index=index,
                    name="input" if p == 0 else node.name,
                    module=None if p == 0 else _module_of(node),
                    position=p,
                    tensors=tuple(c.meta[META_KEY] for c in crossing),
                    head_flops=head_flops,
                    tail_flops=total - head_flops,
                    offered=keep,
                )
            )
        self.cuts: tuple[CutSpec, ...] = tuple(cuts)
        self._crossing = {c.index: raw[c.index][2] for c in cuts}
        self._by_name = {c.name: c for c in cuts}

    # -- queries -----------------------------------------------------------------------------
    @property
    def offered(self) -> tuple[CutSpec, ...]:
        return tuple(c for c in self.cuts if c.offered)

    @property
    def dropped(self) -> int:
        """How many candidate cuts the reduction dropped as dominated."""
        return len(self.cuts) - len(self.offered)

    @property
    def last(self) -> CutSpec:
        return self.cuts[-1]

    def cut(self, key: int | str | CutSpec) -> CutSpec:
        """A candidate cut by index, by name (the node it follows) or itself."""
        if isinstance(key, CutSpec):
            key = key.index
        if isinstance(key, str):
            if key not in self._by_name:
                raise ModelError(f"{self.name}: no cut named {key!r}")
            return self._by_name[key]
        if not 0 <= int(key) < len(self.cuts):
            raise ModelError(f"{self.name}: cut index {key} out of range 0..{len(self.cuts) - 1}")
        return self.cuts[int(key)]

    def summary(self) -> str:
        """One line for users: how many candidates, how many offered, how many dropped."""
        extra = (
            f", {self.unsplittable} positions skipped (a non-tensor value crosses)"
            if self.unsplittable
            else ""
        )
        return (
            f"{self.name} {list(self.input_shape)}: {len(self.cuts)} candidate cuts, "
            f"{len(self.offered)} offered, {self.dropped} dropped as dominated "
            f"(no fewer bytes than an earlier cut){extra}"
        )

    # -- modules -----------------------------------------------------------------------------
    def _copy_const(self, g: fx.Graph, env: dict[fx.Node, fx.Node], n: fx.Node) -> fx.Node:
        if n not in env:
            env[n] = g.node_copy(n, lambda a: self._copy_const(g, env, a))
        return env[n]

    def _lookup(self, g: fx.Graph, env: dict[fx.Node, fx.Node]):
        def get(a: fx.Node) -> fx.Node:
            if a in env:
                return env[a]
            if a in self._const:
                return self._copy_const(g, env, a)
            raise AssertionError(f"{a.name} is neither computed nor received on this side")

        return get

    def head(self, cut: int | str | CutSpec) -> fx.GraphModule:
        """The device side of ``cut``: input -> tuple of the crossing tensors (cached)."""
        c = self.cut(cut)
        if c.index not in self._heads:
            g = fx.Graph()
            env = {self._input: g.placeholder(self._input.name)}
            get = self._lookup(g, env)
            for n in self._order[: c.position]:
                env[n] = g.node_copy(n, get)
            g.output(tuple(env[v] for v in self._crossing[c.index]))
            self._heads[c.index] = fx.GraphModule(self.graph_module, g, f"Head{c.index}")
        return self._heads[c.index]

    def tail(self, cut: int | str | CutSpec) -> fx.GraphModule:
        """The edge side of ``cut``: crossing tensors, in order -> the model's output (cached)."""
        c = self.cut(cut)
        if c.index not in self._tails:
            g = fx.Graph()
            env = {v: g.placeholder(v.name) for v in self._crossing[c.index]}
            get = self._lookup(g, env)
            for n in self._order[c.position :]:
                env[n] = g.node_copy(n, get)
            g.output(fx.map_arg(self._output.args[0], get))
            self._tails[c.index] = fx.GraphModule(self.graph_module, g, f"Tail{c.index}")
        return self._tails[c.index]

    def run_split(self, cut: int | str | CutSpec, x: torch.Tensor) -> Any:
        """``tail(*head(x))``: what the two agents compute together."""
        return self.tail(cut)(*self.head(cut)(x))

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Partition:
        """Move the model (and so every head and tail) to ``device``/``dtype``; drops the caches."""
        self.graph_module.to(device=device, dtype=dtype)
        self.model.to(device=device, dtype=dtype)
        self._heads.clear()
        self._tails.clear()
        return self


def partition(
    model: str | nn.Module,
    input_shape: Sequence[int] = (3, 224, 224),
    *,
    weights: str | os.PathLike[str] | None = None,
    seed: int = DEFAULT_SEED,
    announce=None,
) -> Partition:
    """Build (by name or import path) or take ``model`` and partition it for ``input_shape``."""
    if isinstance(model, str):
        name = model
        module = build_model(model, weights=weights, seed=seed, announce=announce)
    else:
        name, module = type(model).__name__, model
    return Partition(module, input_shape, name=name, seed=seed)


def max_split_error(part: Partition, cuts: Iterable[int | str | CutSpec], x: torch.Tensor) -> float:
    """Largest |tail(head(x)) - model(x)| over ``cuts``, all outputs flattened."""
    with torch.inference_mode():
        ref = flatten_outputs(part.model(x))
        worst = 0.0
        for c in cuts:
            got = flatten_outputs(part.run_split(c, x))
            if len(got) != len(ref):
                return math.inf
            for a, b in zip(got, ref, strict=True):
                if a.shape != b.shape:
                    return math.inf
                worst = max(worst, float((a.float() - b.float()).abs().max()) if a.numel() else 0.0)
    return worst


def flatten_outputs(out: Any) -> list[torch.Tensor]:
    """All tensors in a model output (tensor, tuple, list or dict), in order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in flatten_outputs(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in flatten_outputs(v)]
    return []


__all__ = [
    "CutSpec",
    "ModelError",
    "Partition",
    "TensorSpec",
    "flatten_outputs",
    "max_split_error",
    "offered_mask",
    "partition",
    "trace",
]
