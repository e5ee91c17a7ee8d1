"""System tests: both agents as real processes on loopback. The edge process helper lives with
the edge agent's tests; it is shared from there."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "edge_agent"))
