"""A tiny, hand-checkable system: 3 cuts, 2 GPU levels, linear uplink power, 100 ms slots.

Numbers (all exact in the tests' arithmetic):

- board: levels 0.5 GHz and 1 GHz, head time proportional to 1/f (clock-bound fraction 1),
  peak 1e12 FLOP/s at 1 GHz; P_busy = 2 + 4 f_GHz -> 4 W, 6 W; P_idle = 1 + 1.2 f_GHz -> 1.6 W, 2.2 W;
- model: cut 0 "input" (0 FLOPs, 25 000 bytes = 200 kbit), cut 1 "mid" (2e10 FLOPs: 40 ms / 20 ms,
  5 000 bytes = 40 kbit), cut 2 "out" (5e10 FLOPs: 100 ms / 50 ms, nothing sent); tail times
  5 ms (after input), 3 ms (after mid); result 1 000 bytes;
- uplink: linear, alpha = 1e-7 W per bit/s, beta = 1 W: at full rate on capacity C a bit costs
  alpha + beta/C J (2e-7 J/bit at 10 Mbit/s, 1.1e-6 J/bit at 1 Mbit/s); RTT 20 ms; downlink
  10 Mbit/s (the result's 8 000 bits take 0.8 ms).
"""

from __future__ import annotations

from pathlib import Path

from controller.model import SystemModel
from controller.profiles import load_board, load_model, load_network

BOARD = """
name: tiny-board
description: two-level test board
gpu: {levels_hz: [500000000, 1000000000], cuda_cores: 500, switch_latency_s: 0.0}
compute: {efficiency: 1.0, clock_bound_fraction: 1.0}
power: {busy_w_poly_ghz: [2.0, 4.0], idle_w_poly_ghz: [1.0, 1.2]}
"""

MODEL = """
model: tiny
input_shape: [3, 8, 8]
dtype: float32
result_bytes: 1000
provenance: {method: hand-written test profile}
cuts:
  - {name: input, bytes: 25000, tensors: 1, head_flops: 0, tail_flops: 5.0e10, head_s: 0.0, tail_s: 0.005}
  - {name: mid, bytes: 5000, tensors: 1, head_flops: 2.0e10, tail_flops: 3.0e10, head_s: 0.0, tail_s: 0.003}
  - {name: out, bytes: 1000, tensors: 1, head_flops: 5.0e10, tail_flops: 0, head_s: 0.0, tail_s: 0.0}
"""

NETWORK = """
name: tiny-linear
model: linear
linear: {alpha_w_per_bps: 1.0e-7, beta_w: 1.0}
rtt_s: 0.02
downlink_bps: 10000000
"""


def tiny_system(folder: Path, slot_s: float = 0.1) -> SystemModel:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "board.yaml").write_text(BOARD)
    (folder / "model.yaml").write_text(MODEL)
    (folder / "net.yaml").write_text(NETWORK)
    return SystemModel.build(
        load_board(folder / "board.yaml"), load_model(folder / "model.yaml"), load_network(folder / "net.yaml"), slot_s
    )
