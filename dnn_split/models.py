"""Build the DNN to split: a torchvision model by name or any ``nn.Module`` by import path.

Both agents and the profiler build the model the same way so that a cut index means the same
graph position everywhere. Weights are random (seeded, so two processes build identical models)
unless a ``state_dict`` file is given; nothing is ever downloaded: a builder that would fetch
weights fails with :class:`ModelError` instead.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import torch
from torch import nn

DEFAULT_SEED = 0

# Builders whose random-init default is about to change print a FutureWarning unless told which
# initialisation to use; ``init_weights=True`` is the current default, made explicit.
_EXPLICIT_INIT = {"googlenet", "inception_v3", "quantized_googlenet", "quantized_inception_v3"}


class ModelError(ValueError):
    """A model that cannot be built, loaded, traced or run as asked; the message is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def torchvision_names() -> list[str]:
    """Names ``build_model`` accepts without an import path (all torchvision builders)."""
    import torchvision

    return list(torchvision.models.list_models())


@contextlib.contextmanager
def _no_downloads(what: str) -> Iterator[None]:
    """Turn any attempt to fetch weights while building into a clear error."""

    def refuse(url, *args, **kwargs):
        raise ModelError(f"{what}: building it tried to download {url}; cutedge never downloads")

    hub = torch.hub
    saved = hub.load_state_dict_from_url, hub.download_url_to_file
    hub.load_state_dict_from_url, hub.download_url_to_file = refuse, refuse
    try:
        yield
    finally:
        hub.load_state_dict_from_url, hub.download_url_to_file = saved


def _torchvision_factory(name: str) -> Callable[[], nn.Module]:
    from torchvision.models import get_model_builder

    builder = get_model_builder(name)
    params = inspect.signature(builder).parameters
    kwargs: dict[str, object] = {"weights": None}
    if "weights_backbone" in params:
        kwargs["weights_backbone"] = None
    if name in _EXPLICIT_INIT:
        kwargs["init_weights"] = True
    return lambda: builder(**kwargs)


def _import_factory(path: str) -> Callable[[], nn.Module]:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ModelError(f"model {path!r}: expected package.module:factory")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(f"model {path!r}: cannot import {module_name}: {exc}") from None
    target: object = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ModelError(f"model {path!r}: {module_name} has no attribute {attr!r}")
        target = getattr(target, part)
    if isinstance(target, nn.Module):
        return lambda: target
    if not callable(target):
        raise ModelError(f"model {path!r}: {attr} is neither an nn.Module nor callable")
    return target  # type: ignore[return-value]


def resolve_factory(name: str) -> Callable[[], nn.Module]:
    """The zero-argument callable that builds ``name`` (torchvision name or import path)."""
    if ":" in name:
        return _import_factory(name)
    if name in torchvision_names():
        return _torchvision_factory(name)
    raise ModelError(
        f"unknown model {name!r}: not a torchvision model name (e.g. resnet50, mobilenet_v2) "
        "nor an import path package.module:factory"
    )


def build_model(
    name: str,
    *,
    weights: str | os.PathLike[str] | None = None,
    seed: int = DEFAULT_SEED,
    announce: Callable[[str], None] | None = None,
) -> nn.Module:
    """Build ``name`` in eval mode, with seeded random weights or the ``weights`` state_dict.

    ``announce`` receives one line saying which weights were used; it defaults to stderr so a
    user never mistakes random-weight results for a trained model's.
    """
    say = announce if announce is not None else (lambda line: print(line, file=sys.stderr))
    factory = resolve_factory(name)
    with torch.random.fork_rng(devices=[]), _no_downloads(name):
        torch.manual_seed(seed)
        try:
            model = factory()
        except ModelError:
            raise
        except Exception as exc:  # a user factory may fail in any way; report it in one line
            raise ModelError(
                f"model {name!r}: building it failed: {type(exc).__name__}: {exc}"
            ) from None
    if not isinstance(model, nn.Module):
        raise ModelError(
            f"model {name!r}: factory returned {type(model).__name__}, not an nn.Module"
        )
    if weights is None:
        say(f"{name}: random weights (seed {seed}); pass --weights FILE for trained ones")
    else:
        load_weights(model, weights, name)
        say(f"{name}: weights from {weights}")
    return model.eval()


def _state_dict_from(obj: object, path: Path) -> Mapping[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(k, str) for k in inner):
                obj = inner
                break
        if all(isinstance(k, str) for k in obj) and all(
            isinstance(v, torch.Tensor) for v in obj.values()
        ):
            return obj  # type: ignore[return-value]
    raise ModelError(f"{path}: not a state_dict (expected a mapping of names to tensors)")


def _listed(keys: list[str], limit: int = 3) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_weights(model: nn.Module, path: str | os.PathLike[str], name: str = "model") -> None:
    """Load a state_dict file into ``model``; every mismatch is reported in one line."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{p}: weights file not found")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"{p}: cannot read weights: {type(exc).__name__}: {exc}") from None
    state = _state_dict_from(obj, p)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected {_listed(unexpected)}")
    if wrong:
        problems.append(f"shape mismatch {_listed(wrong)}")
    if problems:
        raise ModelError(f"{p}: state_dict does not fit {name}: {'; '.join(problems)}")
    model.load_state_dict(state, strict=True)


def parse_input_shape(text: str) -> tuple[int, ...]:
    """``"3,224,224"`` -> ``(3, 224, 224)``: one input without the batch dimension."""
    parts = [p.strip() for p in str(text).replace("x", ",").split(",")]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise ModelError(f"input shape {text!r}: expected positive integers like 3,224,224")
    return shape


__all__ = [
    "DEFAULT_SEED",
    "ModelError",
    "build_model",
    "load_weights",
    "parse_input_shape",
    "resolve_factory",
    "torchvision_names",
]
