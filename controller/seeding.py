"""The one place a seed becomes random generators: same seed, same run.

Each consumer (trace generator, arrival process, ...) gets its own stream, derived from the run
seed and a stream name, so adding a random draw to one of them never shifts the others.
"""

from __future__ import annotations

import zlib

import numpy as np

from controller.config import ConfigError


def check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError("seed", None, f"expected a non-negative integer, got {seed!r}")
    return int(seed)


def make_rng(seed: int, stream: str = "") -> np.random.Generator:
    """A numpy Generator for ``stream`` of the run seeded with ``seed``."""
    seed = check_seed(seed)
    if not stream:
        return np.random.default_rng(seed)
    return np.random.default_rng([seed, zlib.crc32(stream.encode())])
