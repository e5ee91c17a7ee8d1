"""The arithmetic a formula needs, for Python floats and for numpy arrays.

A formula written against ``ops`` (``ops.where``, ``ops.exp``, ...) runs on one scenario's floats
with :data:`SCALAR` (the device's controller, the scalar simulator) and on (S,) arrays over S
scenarios with :data:`ARRAY` (the batched engine): one implementation, no twin to keep in step.
The two may still differ in the last bit (``math.exp`` and ``np.exp`` are different libraries),
so engines built on them agree to rounding, not bit for bit.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np


def _where(cond, a, b):
    return a if cond else b


SCALAR = SimpleNamespace(
    where=_where, minimum=min, maximum=max, floor=math.floor, exp=math.exp, log1p=math.log1p, sqrt=math.sqrt,
)
"""Operations on Python numbers (one scenario)."""

ARRAY = SimpleNamespace(
    where=np.where, minimum=np.minimum, maximum=np.maximum, floor=np.floor, exp=np.exp, log1p=np.log1p, sqrt=np.sqrt,
)
"""The same operations on numpy arrays (a batch of scenarios)."""
