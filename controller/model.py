"""The per-slot system model: tables for every (cut, GPU level) pair and the uplink power law.

:class:`SystemModel` turns a board, a model profile and a network profile into the arrays the
controller and the simulator read every slot (DESIGN section 3):

- ``head_s[p, f]``  T_loc(p, f): device time of the head up to cut p at level f (s);
- ``bits[p]``       D(p): bits sent per frame at cut p (0 at the last cut: result stays local);
- ``tail_s[p]``     T_edge(p): edge time of the tail after p (s);
- ``busy_w[f]``, ``idle_w[f]``: board power while the GPU computes / waits at level f (W): the
  model profile's measured powers where it has them (``cutedge profile --levels``), else the
  board's fitted curves.

Everything is computed once; nothing here runs per slot except :func:`tx_power_w`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from controller.profiles import BoardProfile, ModelProfile, NetworkProfile

LN2 = math.log(2.0)


@dataclass(frozen=True, eq=False)
class SystemModel:
    board: BoardProfile
    model: ModelProfile
    network: NetworkProfile
    slot_s: float
    cut_names: tuple[str, ...]
    levels_hz: np.ndarray
    head_s: np.ndarray
    tail_s: np.ndarray
    bits: np.ndarray
    busy_w: np.ndarray
    idle_w: np.ndarray
    result_bits: float

    @classmethod
    def build(
        cls,
        board: BoardProfile,
        model: ModelProfile,
        network: NetworkProfile,
        slot_s: float,
        edge_speedup: float = 1.0,
        input_bytes: int | None = None,
    ) -> SystemModel:
        """``input_bytes`` overrides what cut 0 sends (e.g. the uint8 camera frame instead of the
        float32 input tensor, when normalisation runs on the edge)."""
        if not slot_s > 0:
            raise ValueError(f"slot_s must be > 0, got {slot_s}")
        bits = model.wire_bits()
        if input_bytes is not None:
            bits[0] = 8.0 * input_bytes
        arrays = dict(
            levels_hz=board.levels.copy(),
            head_s=model.head_times_s(board),
            tail_s=model.tail_times_s(edge_speedup),
            bits=bits,
            **dict(zip(("busy_w", "idle_w"), model.busy_idle_w(board))),
        )
        for a in arrays.values():
            a.setflags(write=False)
        return cls(
            board=board,
            model=model,
            network=network,
            slot_s=float(slot_s),
            cut_names=tuple(c.name for c in model.offered),
            result_bits=8.0 * model.result_bytes,
            **arrays,
        )

    @property
    def n_cuts(self) -> int:
        return len(self.cut_names)

    @property
    def n_levels(self) -> int:
        return len(self.levels_hz)

    @property
    def local_cut(self) -> int:
        """Index of the cut that keeps the whole model on the device."""
        return self.n_cuts - 1

    @property
    def result_trip_s(self) -> float:
        """From a tail's end to the result on the device: half an RTT and the result on the downlink."""
        return self.network.rtt_s / 2 + self.result_bits / self.network.downlink_bps

    def extra_energy_j(self) -> np.ndarray:
        """Energy per frame above idle, ``T_loc(p,f) * (P_busy(f) - P_idle(f))`` (J), shape (P, F)."""
        return self.head_s * (self.busy_w - self.idle_w)[None, :]

    def tx_power_w(self, rate_bps: float, capacity_bps: float) -> float:
        """Radio power while sending at ``rate_bps`` on a link of capacity ``capacity_bps``."""
        return tx_power_w(self.network, rate_bps, capacity_bps)


def shannon_log2_k(capacity_bps: float, bandwidth_hz: float) -> float:
    """log2(2^(C/W) - 1), computed without overflow for large C/W."""
    x = capacity_bps / bandwidth_hz
    if x > 50.0:
        return x + math.log2(-math.expm1(-x * LN2))
    return math.log2(math.expm1(x * LN2))


def tx_power_w(net: NetworkProfile, rate_bps: float, capacity_bps: float) -> float:
    if rate_bps <= 0.0:
        return 0.0
    if net.model == "linear":
        return net.alpha_w_per_bps * rate_bps + net.beta_w
    if capacity_bps <= 0.0:
        return math.inf
    w = net.bandwidth_hz
    # P_max * (2^(r/W) - 1) / (2^(C/W) - 1), in log space for large C/W
    log2_num = math.log2(math.expm1(rate_bps / w * LN2)) if rate_bps / w <= 50.0 else (
        rate_bps / w + math.log2(-math.expm1(-rate_bps / w * LN2))
    )
    return net.max_power_w * 2.0 ** (log2_num - shannon_log2_k(capacity_bps, w))
