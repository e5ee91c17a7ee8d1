"""FLOPs of one fx graph node from its module and the real tensor shapes around it.

Why count here and not with a library: the partitioner already has every node's input and output
shapes, and the controller only needs the split of the work between head and tail, so a small
rule table is enough and adds no dependency. A multiply-add counts as 2 FLOPs.

Rules: convolutions, transposed convolutions, linear layers, matrix products and attention are
counted exactly from the shapes. Normalisations cost a few FLOPs per element, pooling one per
window element, and anything else that produces a tensor (activations, additions, ...) one per
output element. Pure data movement (views, reshapes, concatenation, indexing, dropout in eval)
costs nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import fx, nn

# value records: the partitioner stores a TensorSpec-like object with .shape and .dtype in
# node.meta[META_KEY] for tensors and None for anything else.
META_KEY = "cutedge_value"

_FREE_MODULES = (
    nn.Identity,
    nn.Flatten,
    nn.Unflatten,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
    nn.ChannelShuffle,
    nn.PixelShuffle,
    nn.PixelUnshuffle,
    nn.ZeroPad2d,
    nn.ConstantPad1d,
    nn.ConstantPad2d,
    nn.ConstantPad3d,
)

# nn.RMSNorm is new in torch 2.4
_NORM5_MODULES = tuple(
    getattr(nn, n)
    for n in ("LayerNorm", "GroupNorm", "LocalResponseNorm", "RMSNorm")
    if hasattr(nn, n)
)

_FREE_NAMES = {
    "getitem",
    "getattr",
    "size",
    "dim",
    "view",
    "reshape",
    "flatten",
    "unflatten",
    "permute",
    "transpose",
    "t",
    "contiguous",
    "cat",
    "concat",
    "concatenate",
    "stack",
    "split",
    "chunk",
    "unbind",
    "squeeze",
    "unsqueeze",
    "expand",
    "expand_as",
    "narrow",
    "select",
    "dropout",
    "dropout1d",
    "dropout2d",
    "dropout3d",
    "alpha_dropout",
    "feature_alpha_dropout",
    "stochastic_depth",
    "to",
    "type",
    "type_as",
    "float",
    "half",
    "double",
    "clone",
    "detach",
    "identity",
    "channel_shuffle",
    "pixel_shuffle",
    "pixel_unshuffle",
    "pad",
    "assert",
}

_MATMUL_NAMES = {"matmul", "mm", "bmm"}
_ADDMM_NAMES = {"addmm", "baddbmm", "addbmm"}
_CONV_NAMES = {"conv1d", "conv2d", "conv3d"}
_CONV_T_NAMES = {"conv_transpose1d", "conv_transpose2d", "conv_transpose3d"}
_POOL_NAMES = {
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "lp_pool1d",
    "lp_pool2d",
}
_ADAPTIVE_NAMES = {
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
}
_NORM_NAMES = {"batch_norm", "instance_norm"}
_NORM5_NAMES = {"layer_norm", "group_norm", "rms_norm", "local_response_norm", "normalize"}
_SOFTMAX_NAMES = {"softmax", "log_softmax", "softmin"}


def _shape(node: Any) -> tuple[int, ...] | None:
    if not isinstance(node, fx.Node):
        return None
    value = node.meta.get(META_KEY)
    return tuple(value.shape) if value is not None else None


def _numel(shape: Sequence[int] | None) -> int:
    return math.prod(shape) if shape is not None else 0


def _target_name(node: fx.Node) -> str:
    """``F.relu`` -> ``relu``, ``operator.matmul`` -> ``matmul``, ``x.__matmul__`` -> ``matmul``."""
    target = node.target
    name = target if isinstance(target, str) else getattr(target, "__name__", str(target))
    return name.strip("_")


def _arg(node: fx.Node, index: int, key: str) -> Any:
    if key in node.kwargs:
        return node.kwargs[key]
    return node.args[index] if len(node.args) > index else None


def _window(kernel: Any, ndim: int) -> int:
    if isinstance(kernel, int):
        return kernel**ndim
    if isinstance(kernel, Sequence):
        return math.prod(int(k) for k in kernel)
    return 1


def _module_flops(module: nn.Module, node: fx.Node) -> int:
    out = _shape(node)
    if out is None:
        return 0
    out_n = _numel(out)
    inp = _shape(node.args[0]) if node.args else None
    if isinstance(module, _FREE_MODULES):
        return 0
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        per_in = (module.out_channels // module.groups) * math.prod(module.kernel_size)
        bias = out_n if module.bias is not None else 0
        return 2 * _numel(inp) * per_in + bias
    if isinstance(module, nn.modules.conv._ConvNd):
        per_out = (module.in_channels // module.groups) * math.prod(module.kernel_size)
        bias = out_n if module.bias is not None else 0
        return 2 * out_n * per_out + bias
    if isinstance(module, nn.Linear):
        return 2 * out_n * module.in_features + (out_n if module.bias is not None else 0)
    if isinstance(module, nn.Bilinear):
        return 2 * out_n * module.in1_features * module.in2_features
    if isinstance(module, nn.MultiheadAttention):
        return _mha_flops(module, node)
    if isinstance(module, (nn.modules.batchnorm._NormBase,)):
        return 2 * out_n
    if isinstance(module, _NORM5_MODULES):
        return 5 * out_n
    if isinstance(
        module, (nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd)
    ):
        return _numel(inp)
    if isinstance(module, (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd)):
        ndim = max(len(out) - 2, 1)
        return out_n * _window(module.kernel_size, ndim)
    if isinstance(module, (nn.Softmax, nn.LogSoftmax, nn.Softmin)):
        return 3 * out_n
    return out_n


def _mha_flops(module: nn.MultiheadAttention, node: fx.Node) -> int:
    q, k = _shape(_arg(node, 0, "query")), _shape(_arg(node, 1, "key"))
    if q is None or k is None:
        return 0
    e = module.embed_dim
    batch_first = module.batch_first
    # shapes are (L, N, E) or (N, L, E); unbatched (L, E)
    if len(q) == 2:
        n, length, src = 1, q[0], k[0]
    elif batch_first:
        n, length, src = q[0], q[1], k[1]
    else:
        n, length, src = q[1], q[0], k[0]
    proj = 2 * n * e * (length * e + 2 * src * e + length * e)
    attend = 2 * n * length * src * e * 2
    return proj + attend + 3 * n * module.num_heads * length * src


def _function_flops(node: fx.Node) -> int:
    out = _shape(node)
    if out is None:
        return 0
    out_n = _numel(out)
    name = _target_name(node)
    if name in _FREE_NAMES:
        return 0
    if name in _CONV_NAMES:
        w = _shape(_arg(node, 1, "weight"))
        bias = out_n if _arg(node, 2, "bias") is not None else 0
        return 2 * out_n * _numel(w[1:]) + bias if w else out_n
    if name in _CONV_T_NAMES:
        w = _shape(_arg(node, 1, "weight"))
        inp = _shape(_arg(node, 0, "input"))
        bias = out_n if _arg(node, 2, "bias") is not None else 0
        return 2 * _numel(inp) * _numel(w[1:]) + bias if w and inp else out_n
    if name == "linear":
        w = _shape(_arg(node, 1, "weight"))
        bias = out_n if _arg(node, 2, "bias") is not None else 0
        return 2 * out_n * w[-1] + bias if w else out_n
    if name in _MATMUL_NAMES:
        a = _shape(node.args[0]) if node.args else None
        return 2 * out_n * a[-1] if a else out_n
    if name in _ADDMM_NAMES:
        a = _shape(node.args[1]) if len(node.args) > 1 else None
        return 2 * out_n * a[-1] + out_n if a else out_n
    if name == "scaled_dot_product_attention":
        q, k, v = (_shape(_arg(node, i, key)) for i, key in enumerate(("query", "key", "value")))
        if q and k and v:
            batch = _numel(q[:-2])
            return 2 * batch * q[-2] * k[-2] * (q[-1] + v[-1]) + 3 * batch * q[-2] * k[-2]
        return out_n
    if name in _ADAPTIVE_NAMES:
        return _numel(_shape(node.args[0]) if node.args else None)
    if name in _POOL_NAMES:
        ndim = max(len(out) - 2, 1)
        return out_n * _window(_arg(node, 1, "kernel_size"), ndim)
    if name in _NORM_NAMES:
        return 2 * out_n
    if name in _NORM5_NAMES:
        return 5 * out_n
    if name in _SOFTMAX_NAMES:
        return 3 * out_n
    return out_n


def node_flops(gm: fx.GraphModule, node: fx.Node) -> int:
    """FLOPs of ``node`` for the batch it was traced with (shapes from ``node.meta``)."""
    if node.op == "call_module":
        return int(_module_flops(gm.get_submodule(str(node.target)), node))
    if node.op in ("call_function", "call_method"):
        return int(_function_flops(node))
    return 0


__all__ = ["META_KEY", "node_flops"]
