"""Batched trace-driven engine: many scenarios of one system stepped together with numpy.

A sweep runs the same system over V values x seeds x traces x policies: hundreds of scenarios
of a few thousand slots each. :func:`simulation.simulator.simulate` steps one scenario with a
Python loop (~60 000 slot-steps/s); here every quantity of a slot is an array of shape (S,) over
the S scenarios ("lanes"), and the controller's pair search is one (S, K) operation, so the
Python overhead of a slot is paid once for all lanes.

It is the same model, not a second one: every slot runs the simulator's own rules
(:func:`simulation.dynamics.slot_step`, on arrays), the controller's constants and formulas come
from :mod:`controller.lyapunov` (:func:`~controller.lyapunov.pair_tables`,
:func:`~controller.lyapunov.bit_price_j_per_bit`, :func:`~controller.lyapunov.shannon_rate_bps`,
:func:`~controller.lyapunov.linear_send_gain`), the objective is evaluated with ``np.matmul`` on
the same eight rows, in the same order, as the scalar controller's ``np.dot``, and the per-frame
times and summaries are built by the simulator's own functions. ``tests/simulation/test_sweep.py``
checks that decisions and queues agree slot by slot with the scalar path.

Two kinds of lane:

- a :class:`~controller.lyapunov.LyapunovConfig`: the drift-plus-penalty controller (and its
  ablations: no DVFS, no rate control, no virtual queues, fixed cut);
- a :class:`Schedule`: a (cut, level) per slot decided in advance, sending whatever is queued at
  full capacity. Every baseline whose choice does not look at the queues (local, edge,
  Neurosurgeon, energy-greedy, JointDNN, any fixed pair) is a schedule: its policy object
  computes it from the past capacities and arrivals alone (``simulation.baselines``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from controller.lyapunov import (
    AGE_RING_CHUNKS,
    FRAME_MARGIN,
    LN2,
    PRICE_EVERY_SLOTS,
    ROWS,
    LyapunovConfig,
    bit_price_floor,
    bit_price_j_per_bit,
    linear_send_gain,
    objective_rows,
    pair_tables,
    price_tables,
    shannon_fast_rate,
    shannon_rate_bps,
)
from controller.model import SystemModel
from controller.ops import ARRAY
from simulation.dynamics import slot_step
from simulation.edge import EdgeProfile, SharedEdges, apply_edge
from simulation.simulator import SimResult, frame_times, summarize


@dataclass(frozen=True, eq=False)
class Schedule:
    """A policy decided in advance: ``cut[t]``, ``level[t]``; heads run, the uplink sends at full
    capacity whatever is queued (``min(C, Q_x/slot_s)``), every arrival is admitted."""

    name: str
    cut: np.ndarray
    level: np.ndarray


@dataclass(frozen=True, eq=False)
class Lane:
    """One scenario of a batch: a policy, the per-slot capacity and the frame arrival times."""

    name: str
    policy: LyapunovConfig | Schedule
    capacity_bps: np.ndarray
    arrival_times_s: np.ndarray
    edge: int = -1  # the shared edge this device uses (simulate_batch's ``edge``); -1: its own


# -- model formulas on arrays (twins of controller.model's scalar ones, tested to agree) -------


def shannon_log2_k_array(capacity_bps: np.ndarray, bandwidth_hz: float) -> np.ndarray:
    """``log2(2^(C/W) - 1)`` elementwise; the array form of :func:`controller.model.shannon_log2_k`."""
    x = np.asarray(capacity_bps, dtype=float) / bandwidth_hz
    out = np.empty_like(x)
    big = x > 50.0
    with np.errstate(divide="ignore", invalid="ignore"):
        out[big] = x[big] + np.log2(-np.expm1(-x[big] * LN2))
        small = ~big
        out[small] = np.log2(np.expm1(x[small] * LN2))
    return out


def tx_power_w_array(system: SystemModel, rate_bps: np.ndarray, capacity_bps: np.ndarray) -> np.ndarray:
    """Radio power elementwise; the array form of :func:`controller.model.tx_power_w`."""
    net = system.network
    r = np.asarray(rate_bps, dtype=float)
    c = np.asarray(capacity_bps, dtype=float)
    out = np.zeros_like(r)
    pos = r > 0.0
    if net.model == "linear":
        out[pos] = net.alpha_w_per_bps * r[pos] + net.beta_w
        return out
    w = net.bandwidth_hz
    ok = pos & (c > 0.0)
    out[pos & ~ok] = math.inf
    x = r[ok] / w
    big = x > 50.0
    log2_num = np.empty_like(x)
    log2_num[big] = x[big] + np.log2(-np.expm1(-x[big] * LN2))
    log2_num[~big] = np.log2(np.expm1(x[~big] * LN2))
    out[ok] = net.max_power_w * np.power(2.0, log2_num - shannon_log2_k_array(c[ok], w))
    return out


# -- deciders --------------------------------------------------------------------------------


class _LyapunovGroup:
    """Controller lanes that share one pair set (same fixed cut/level and DVFS switch).

    :class:`~controller.lyapunov.LyapunovController` lane by lane, with the same formulas in the
    same order (its docstring and ``docs/controller.md`` state the objective). ``log2 K`` of the
    Shannon law is computed for all slots before the run (:meth:`prepare`); a slot then costs a
    fixed number of numpy calls whatever the number of lanes.
    """

    def __init__(self, system: SystemModel, configs: Sequence[LyapunovConfig], sl: slice):
        self.sl = sl
        self.system = system
        tau = system.slot_s
        self.tau = tau
        t = pair_tables(system, configs[0])
        self.pair_cut, self.pair_level = t.cut, t.level
        self.mu, self.bits = t.mu, t.per_frame[1]
        self.head_s = t.head_s
        pt = price_tables(t, tau)
        self.price_mu, self.price_starts, self.price_rows = t.mu[pt.order], pt.starts, pt.rows  # pairs by bits
        self.price_cap = pt.cap
        self.idle_level, self.idle_cost = t.idle_level, t.idle_cost_j
        S, K = len(configs), t.mu.size
        f = np.array
        self.V = f([c.V for c in configs], dtype=float)
        vq = f([c.virtual_queues for c in configs], dtype=bool)
        bsj = f([c.energy_budget_w * tau if (c.energy_budget_w is not None and c.virtual_queues) else 0.0 for c in configs])
        self.has_budget = bsj > 0.0
        self.budget_slot_j = np.where(self.has_budget, bsj, 1.0)
        self.budget_j = f([c.energy_budget_w * tau if c.energy_budget_w is not None else 1.0 for c in configs])
        self.obs_budget = f([c.energy_budget_w is not None for c in configs]) & vq
        self.floor_slot = f([c.throughput_floor_fps * tau if c.throughput_floor_fps is not None else 0.0 for c in configs])
        self.obs_floor = f([c.throughput_floor_fps is not None for c in configs]) & vq
        self.eps = f([c.latency_epsilon if c.latency_epsilon is not None else 0.0 for c in configs])
        self.obs_latency = f([c.latency_epsilon is not None for c in configs]) & vq
        self.theta = f([c.admission_frame_value_j if c.admission_frame_value_j is not None else 0.0 for c in configs])
        self.admission = f([c.admission_frame_value_j is not None for c in configs])
        self.rate_control = f([c.rate_control for c in configs], dtype=bool)
        self.mult = f([c.multipliers for c in configs], dtype=bool)
        self.omega = f([c.latency_weight(tau) for c in configs], dtype=float)
        self.alpha = f([c.arrival_ewma for c in configs], dtype=float)
        self.phase = f([c.arrival_phase for c in configs], dtype=bool)
        self.age = f([c.uplink_age for c in configs], dtype=bool)
        self.any_age = bool(self.age.any())
        self.all_age = bool(self.age.all())
        self.any_phase = bool(self.phase.any())
        self.slopes = pt.bits[:, None] * self.omega[None, :]  # (G, S): omega*D per bits group
        self.remote_group = (pt.bits > 0.0)[:, None].astype(float)  # (G, 1): groups that offload
        units = [float(c.queue_unit_bits or system.bits[0]) for c in configs]
        if not all(u > 0 for u in units):
            raise ValueError("queue_unit_bits must be > 0 (the model's input cut sends no bits)")
        self.unit = f(units)
        self.unit2 = self.unit * self.unit
        self.gain = f([c.multiplier_gain for c in configs], dtype=float) / self.unit
        self.avg = 1.0 / f([c.multiplier_window_slots for c in configs], dtype=float)
        self.dmax = float(system.bits.max())
        self.gx_min = bit_price_floor(system.network)
        # plain bools: which optional terms any lane has (skipped entirely when none does)
        self.any_budget = bool(self.has_budget.any())
        self.any_obs = bool(self.obs_budget.any() or self.obs_floor.any() or self.obs_latency.any())
        self.any_admission = bool(self.admission.any())
        self.all_rate_control = bool(self.rate_control.all())
        self.any_zero_V = bool((self.V <= 0.0).any())
        self.any_mult = bool(self.mult.any())
        self.all_mult = bool(self.mult.all())
        self.needs_energy = bool(self.obs_budget.any())
        self.shannon = system.network.model == "shannon"
        # the scalar controller's three row sets (objective_rows), pairs as rows: a slot's
        # objective is (K, S), lanes along the contiguous axis, one matrix product per row set
        r = objective_rows(t)
        self.unit_rows = np.ascontiguousarray(r.unit.T)
        self.sat_rows = np.ascontiguousarray(r.at_mu.T)
        self.lin_rows = np.ascontiguousarray(r.lin.T)
        self.w = np.zeros((ROWS, S))
        self.w[2] = self.omega
        self.w[6] = self.omega
        self.ws = np.zeros((ROWS, S))
        self.wl = np.zeros((2 * ROWS + 1, S))
        self.obj = np.empty((K, S))
        self.part_obj = np.empty((K, S))
        self.pair_idx = np.arange(K)[:, None]
        self.lanes = np.arange(S)
        self.t = 0
        self.reset()

    def prepare(self, log2_k: np.ndarray | None) -> None:
        """Per-slot log2 K of this group's lanes, (T, S_g)."""
        self.log2_k = log2_k
        self.t = 0

    def reset(self) -> None:
        S = self.V.size
        self.z_energy = np.zeros(S)
        self.z_throughput = np.zeros(S)
        self.z_latency = np.zeros(S)
        self.gamma_x = np.zeros(S)
        self.gx_fast = np.zeros(S)
        self.gamma_c = np.zeros(S)
        self.arrival_estimate = np.zeros(S)
        self.arrival_phase_s = np.full(S, self.tau)
        self.run_q = np.zeros(S)   # the last slot's heads: queue, head time, mu (ran: T > 0)
        self.run_T = np.zeros(S)
        self.run_mu = np.zeros(S)
        self.price_least = np.zeros((self.price_starts.size, S))
        self.last_potential = np.zeros(S)
        self.last_bits = np.zeros(S)
        self.flow_bits = self.unit.copy()
        self.made_bits = np.zeros(S)
        self.last_queues = np.zeros(S)
        # the uplink's head-of-line age (LyapunovController._uplink_age): per chunk the bits made
        # up to it and its slot, a chunk's lanes contiguous; the chunks so far, the front chunk
        # and its bits made (kept by observe, so a front that does not move costs no read)
        self.made_total = np.zeros(S)
        self.chunk_made = np.zeros((AGE_RING_CHUNKS, S))
        self.chunk_slot = np.zeros((AGE_RING_CHUNKS, S), dtype=np.int64)
        self.chunks = np.zeros(S, dtype=np.int64)
        self.age_front = np.zeros(S, dtype=np.int64)
        self.front_made = np.zeros(S)
        self.t = 0

    def _learn(self, arrivals, cap) -> None:
        """LyapunovController._learn, lane by lane."""
        if self.t == 0:
            with np.errstate(divide="ignore"):
                g = bit_price_j_per_bit(self.system.network, np.where(cap > 0.0, cap, 1.0))
            self.gamma_x = np.where(self.mult & (cap > 0.0), g, 0.0)
            self.gx_fast = self.gamma_x.copy()
            return
        if self.any_mult:
            x = np.minimum(np.maximum(self.gain * (self.made_bits - self.last_potential), -1.0), 1.0)
            g = np.maximum(self.gx_fast * np.exp(x), self.gx_min)
            gx = self.gamma_x + self.avg * (g - self.gamma_x)
            if self.all_mult:
                self.gx_fast, self.gamma_x = g, gx
            else:
                self.gx_fast = np.where(self.mult, g, self.gx_fast)
                self.gamma_x = np.where(self.mult, gx, self.gamma_x)
        self.arrival_estimate = self.arrival_estimate + self.alpha * (arrivals - self.arrival_estimate)

    def _refresh_price(self, v_e, lam) -> None:
        """LyapunovController._refresh_price, lane by lane: the least A of each bits group."""
        a = self.arrival_estimate
        A = (v_e[:, None] * self.price_rows[0] + (v_e / lam)[:, None] * self.price_rows[1]
             + self.omega[:, None] * self.price_rows[2]
             + (self.V * self.gamma_x + self.z_latency / self.dmax)[:, None] * self.price_rows[3])
        keep = self.price_mu[None, :] >= a[:, None]
        A = np.where(keep | ~keep.any(axis=1, keepdims=True), A, np.inf)
        self.price_least = np.ascontiguousarray((np.minimum.reduceat(A, self.price_starts, axis=1) + FRAME_MARGIN).T)

    def _learn_phase(self, qc, arrivals) -> None:
        """LyapunovController._learn_phase, lane by lane."""
        T = self.run_T
        ok = self.phase & (T > 0.0) & (arrivals > 0.0)
        lq = self.run_q
        ahead = np.minimum(lq, self.run_mu)
        frac = (lq + arrivals - qc - ahead) / np.where(arrivals > 0.0, arrivals, 1.0)
        used = np.maximum(frac, 0.0) * T
        rho = self.arrival_phase_s
        censored = (frac >= 0.999) | (used >= 0.99 * (self.tau - ahead * T))
        x = np.where(censored, np.maximum(rho, used), used)
        new = np.maximum(rho + self.alpha * (x - rho), 1e-6)
        self.arrival_phase_s = np.where(ok, new, rho)

    def decide(self, qc, qx, cap, arrivals, edge_wait, out_cut, out_level, out_rate, out_process, out_admit) -> None:
        # called inside simulate_batch's errstate (divide, invalid, over ignored): lanes a branch
        # does not take may divide by zero or overflow, as the scalar controller's never-taken
        # branches would
        sl = self.sl
        qc = np.maximum(qc[sl], 0.0)
        qx = qx[sl]
        cap = cap[sl]
        arrivals = arrivals[sl]
        ew = edge_wait[sl] if edge_wait is not None else None
        self._learn(arrivals, cap)
        if self.any_phase:
            self._learn_phase(qc, arrivals)
        t = self.t
        self.t = t + 1
        V = self.V
        if self.any_budget:
            v_e = V + np.where(self.has_budget, self.z_energy / self.budget_slot_j, 0.0)
        else:
            v_e = V
        omega = self.omega
        tau = self.tau
        a_hat = self.arrival_estimate
        supply = qc + a_hat
        lam = np.where(a_hat > 0.05, a_hat, 0.05)
        g_x = self.gamma_x
        z_l = self.z_latency
        if self.any_mult and t % PRICE_EVERY_SLOTS == 0:
            self._refresh_price(v_e, lam)
        w_bits = qx / self.unit2 + V * g_x
        c1 = np.where(cap > 1.0, cap, 1.0)
        w = self.w  # the scalar controller's w (rows 2 and 6, omega, are set once)
        w1 = w_bits + z_l / self.dmax
        w[0] = v_e
        w[1] = w1
        w[3] = omega * qx / c1
        if ew is not None:  # the scalar controller's two expressions, bit for bit
            w[3] = np.where(ew > 0.0, omega * (qx / c1 + ew), w[3])
        w[4] = v_e
        frame = -(qc + omega * tau + self.z_throughput + z_l)
        if self.any_mult:
            # the frame's price: the least line at this slot's capacity, capped
            lines = self.price_least + self.slopes * (1.0 / c1)
            if ew is not None:
                lines += self.remote_group * (omega * ew)  # an offloaded frame waits behind the edge
            price = lines.min(axis=0)
            e_cap, i_cap, l_cap = self.price_cap
            price = np.minimum(price, v_e * (e_cap + i_cap / lam) + omega * l_cap)
            self.gamma_c = np.where(self.mult & (V > 1e-12), price / np.where(V > 1e-12, V, 1.0), 0.0)
            frame = np.where(self.mult, -(np.floor(qc + 1e-9) + price + self.z_throughput + z_l), frame)
        w[5] = frame
        w[7] = omega / c1
        # heads at pair k: n = min(mu, s_k), s_k = Q_c + a_hat*phi_k, phi_k = min(1, rho*mu_k/tau):
        # the saturated pairs are [0, j), those with phi < 1 [j, j1), the rest phi = 1 (as in
        # LyapunovController.decide, with the same bisections)
        mu = self.mu
        j = np.searchsorted(mu, supply)
        j1 = j
        lim = b = None
        if self.any_phase:
            rho = self.arrival_phase_s
            lim = np.where(self.phase, tau / rho, 0.0)
            lin = supply < lim
            if lin.any():
                b = np.where(lin, a_hat / np.where(lin, lim, 1.0), 0.0)
                j = np.where(lin, np.searchsorted(mu, qc / (1.0 - b)), j)
                j1 = np.where(lin, np.maximum(np.searchsorted(mu, lim), j), j)
        obj = self.obj
        ws = self.ws
        np.multiply(w[0:4], supply, out=ws[0:4])
        ws[4] = v_e
        ws[5] = frame * supply
        ws[6] = omega * (qc * (qc + 1.0) + 2.0 * a_hat)
        ws[7] = w[7] * (supply * (supply + 1.0))
        np.matmul(self.unit_rows, ws, out=obj)
        if b is not None:
            lo, hi = int(j.min()), int(j1.max())
            if lo < hi:
                wl = self.wl
                q1 = qc * (qc + 1.0)
                np.multiply(w[0:4], qc, out=wl[0:4])
                wl[4] = v_e
                wl[5] = frame * qc + omega * a_hat * rho
                wl[6] = omega * q1
                wl[7] = w[7] * q1
                np.multiply(w[0:4], b, out=wl[8:12])
                wl[13] = frame * b
                wl[15] = w[7] * b * (2.0 * qc + 1.0)
                wl[16] = w[7] * b * b
                part = self.part_obj[lo:hi]
                np.matmul(self.lin_rows[lo:hi], wl, out=part)
                np.copyto(obj[lo:hi], part, where=self.pair_idx[lo:hi] < j1)
        top = int(j.max())
        if top:
            part = self.part_obj[:top]
            np.matmul(self.sat_rows[:top], w, out=part)
            np.copyto(obj[:top], part, where=self.pair_idx[:top] < j)
        k = obj.argmin(axis=0)
        mu_k = mu[k]
        idle = v_e * self.idle_cost
        if self.any_mult:
            idle = np.where(self.mult, idle + omega * tau * (qc - np.floor(qc + 1e-9)), idle)
        process = (supply > 0.0) & (obj[k, self.lanes] < idle)
        out_cut[sl] = self.pair_cut[k]
        out_level[sl] = np.where(process, self.pair_level[k], self.idle_level)
        out_process[sl] = process
        head_bits = np.where(process, self.bits[k], 0.0)
        if lim is None:
            s_k = supply
        else:
            s_k = qc + np.where(mu_k >= lim, a_hat, a_hat * mu_k / np.where(lim > 0.0, lim, 1.0))
        made = np.where(process, np.minimum(mu_k, s_k) * head_bits, 0.0)
        self.run_q = qc
        self.run_T = np.where(process, self.head_s[k], 0.0)
        self.run_mu = mu_k
        self.last_bits = head_bits
        self.flow_bits = np.where(head_bits > 0.0, head_bits, self.flow_bits)
        w_r = w_bits + omega * tau / self.unit + z_l / self.dmax
        if self.any_age:
            queued = qx > 0.5
            waiting = queued if self.all_age else queued & self.age
            age = self._uplink_age(qx, queued, waiting, t)
            if age is not None:
                w_r = np.where(waiting, w_r + omega * age / self.flow_bits, w_r)
        log2_k = None if self.log2_k is None else self.log2_k[t]
        bits = qx + made
        rate = self._rate(cap, bits / tau, v_e, w_r, log2_k)
        fast = (rate > 0.0) & (rate >= bits / tau) & (rate < cap) & self.rate_control
        if fast.any():
            i = np.flatnonzero(fast)  # about a third of the lanes: the closed form on those only
            rate[i] = self._fast_rate(i, cap[i], bits[i], v_e[i], None if log2_k is None else log2_k[i])
        out_rate[sl] = rate
        if self.any_mult:
            pot = self._rate(cap, math.inf, 1.0, self.gx_fast, log2_k) * tau
            self.last_potential = np.where(self.mult, pot, 0.0)
        if self.any_admission:
            out_admit[sl] = np.where(self.admission, qc < self.V * self.theta, True)
        elif t == 0:
            out_admit[sl] = True
        self.last_queues = qc + qx

    def _uplink_age(self, qx, queued, waiting, t) -> np.ndarray | None:
        """LyapunovController._uplink_age, lane by lane (None when no lane waits): the front is
        the first chunk whose bits made exceed the bits sent (all chunks made when the queue is
        empty). It moves a chunk at most in almost every slot: a few steps for all lanes, then
        ``np.searchsorted`` for a lane with more to go (the ring is non-decreasing from the front)."""
        mask = AGE_RING_CHUNKS - 1
        n = self.chunks
        f, fm = self.age_front, self.front_made
        oldest = n - mask  # the ring's last entry is scratch
        old = f < oldest
        if old.any():
            f = np.where(old, oldest, f)
            fm = np.where(old, self.chunk_made[oldest & mask, self.lanes], fm)
        if not queued.all():
            f = np.where(queued, f, n)
        if not waiting.any():
            self.age_front, self.front_made = f, fm
            return None
        sent = self.made_total - qx + 0.5
        S, lanes = self.V.size, self.lanes
        flat = self.chunk_made.reshape(-1)
        step = (f < n) & (fm <= sent)
        for _ in range(3):
            if not step.any():
                break
            f = f + step
            fm = np.where(step, flat.take((f & mask) * S + lanes), fm)
            step = (f < n) & (fm <= sent)
        else:
            if step.any():
                f, fm = f.copy(), fm.copy()
                for j in np.flatnonzero(step).tolist():
                    x = _first_above_in(self.chunk_made[:, j], int(f[j]), int(n[j]), float(sent[j]))
                    f[j] = x
                    fm[j] = self.chunk_made[x & mask, j]
        self.age_front, self.front_made = f, fm
        made_in = self.chunk_slot.reshape(-1).take((f & mask) * S + lanes)
        return np.where(f < n, (t - 1 - made_in) * self.tau, 0.0)

    def _fast_rate(self, i, cap, bits, v_e, log2_k) -> np.ndarray:
        """LyapunovController._fast_rate for the lanes ``i`` (the same function on arrays)."""
        if not self.shannon:
            return cap
        pos = v_e > 0.0
        c_w = self.omega[i] * (bits / self.flow_bits[i] + 1.0) / (2.0 * np.where(pos, v_e, 1.0))
        r = shannon_fast_rate(c_w, self.system.network, log2_k, ARRAY)
        r = np.where(r >= cap, cap, np.maximum(r, bits / self.tau))
        return np.where(pos, r, cap)

    def _rate(self, cap, bits_rate, v_e, w_r, log2_k) -> np.ndarray:
        """LyapunovController._rate, lane by lane (same formulas), with ``bits_rate`` = bits/tau."""
        r_max = np.minimum(bits_rate, cap)
        net = self.system.network
        if self.shannon:
            r = shannon_rate_bps(w_r, np.where(v_e > 0.0, v_e, 1.0), net, log2_k, np.log2)
            chosen = np.where(r <= 0.0, 0.0, np.minimum(r, r_max))
        else:
            chosen = np.where(linear_send_gain(w_r, v_e, net, r_max) > 0.0, r_max, 0.0)
        chosen = np.where(w_r <= 0.0, 0.0, chosen)
        if self.any_zero_V:
            chosen = np.where((v_e <= 0.0) & (w_r > 0.0), r_max, chosen)
        if not self.all_rate_control:
            chosen = np.where(self.rate_control, chosen, r_max)
        return np.where(r_max <= 0.0, 0.0, chosen)

    def observe(self, energy, done, sent) -> None:
        sl = self.sl
        self.made_bits = done[sl] * self.last_bits
        if self.any_age:
            made = self.made_bits > 0.0
            self.made_total = self.made_total + self.made_bits
            # every lane writes the entry after its last chunk (scratch unless it made bits)
            pos = (self.chunks & (AGE_RING_CHUNKS - 1)) * self.V.size + self.lanes
            self.chunk_made.reshape(-1).put(pos, self.made_total)
            self.chunk_slot.reshape(-1).put(pos, self.t - 1)
            # a front waiting for the next chunk (an uplink that was empty) reads what it made
            self.front_made = np.where(made & (self.age_front == self.chunks), self.made_total, self.front_made)
            self.chunks = self.chunks + made
        if not self.any_obs:
            return
        if self.obs_budget.any():
            b = self.budget_j
            z = self.z_energy + (energy[sl] - b) / b
            self.z_energy = np.where(self.obs_budget, np.maximum(z, 0.0), self.z_energy)
        if self.obs_floor.any():
            z = self.z_throughput + self.floor_slot - done[sl]
            self.z_throughput = np.where(self.obs_floor, np.maximum(z, 0.0), self.z_throughput)
        if self.obs_latency.any():
            served = done[sl] * (1.0 - self.last_bits / self.dmax) + sent[sl] / self.dmax
            z = self.z_latency + np.where(self.last_queues > 0, self.eps, 0.0) - served
            self.z_latency = np.where(self.obs_latency, np.maximum(z, 0.0), self.z_latency)

    def virtual_queues(self) -> dict[str, np.ndarray]:
        return {"Z_E": self.z_energy, "Z_T": self.z_throughput, "Z_L": self.z_latency}


class _ScheduleGroup:
    """Lanes that follow a precomputed (cut, level) schedule and send at full capacity."""

    def __init__(self, system: SystemModel, schedules: Sequence[Schedule], sl: slice, n_slots: int):
        self.sl = sl
        self.tau = system.slot_s
        for s in schedules:
            if len(s.cut) < n_slots or len(s.level) < n_slots:
                raise ValueError(f"schedule {s.name!r} is shorter than the run ({n_slots} slots)")
            if s.cut.min() < 0 or s.cut.max() >= system.n_cuts or s.level.min() < 0 or s.level.max() >= system.n_levels:
                raise ValueError(f"schedule {s.name!r} chooses a cut or level outside the tables")
        # (T, S_g) so that a slot's decisions are one contiguous row
        self.cut = np.ascontiguousarray(np.stack([s.cut[:n_slots] for s in schedules], axis=1).astype(np.int64))
        self.level = np.ascontiguousarray(np.stack([s.level[:n_slots] for s in schedules], axis=1).astype(np.int64))
        self.t = 0

    def reset(self) -> None:
        self.t = 0

    def prepare(self, log2_k: np.ndarray | None) -> None:
        self.t = 0

    def decide(self, qc, qx, cap, arrivals, edge_wait, out_cut, out_level, out_rate, out_process, out_admit) -> None:
        sl = self.sl
        out_cut[sl] = self.cut[self.t]
        out_level[sl] = self.level[self.t]
        out_rate[sl] = np.minimum(cap[sl], qx[sl] / self.tau)
        out_process[sl] = True
        out_admit[sl] = True
        self.t += 1

    def observe(self, energy, done, sent) -> None:
        pass


# -- the engine ------------------------------------------------------------------------------


def _first_above_in(column: np.ndarray, lo: int, hi: int, v: float) -> int:
    """The first entry x in [lo, hi) of one lane's age ring (its ``column``, indexed modulo
    AGE_RING_CHUNKS, non-decreasing over the window) above ``v``, or hi if none: np.searchsorted
    on the window's (at most two) contiguous pieces."""
    R = AGE_RING_CHUNKS
    a, n = lo & (R - 1), hi - lo
    first = column[a:min(a + n, R)]
    k = int(np.searchsorted(first, v, side="right"))
    if k < first.size or first.size == n:
        return lo + k
    return lo + first.size + int(np.searchsorted(column[:n - first.size], v, side="right"))


def _slot_energy(system: SystemModel, busy, level, r, sent, cap, log2_k) -> tuple[np.ndarray, np.ndarray]:
    """(energy, radio energy) of slots: ``busy*P_busy(f) + (slot - busy)*P_idle(f)`` plus the
    radio's ``P_tx(r, C) * sent/r`` (simulate()'s formulas, on arrays of any shape)."""
    tau = system.slot_s
    net = system.network
    e_compute = busy * system.busy_w[level] + (tau - busy) * system.idle_w[level]
    if net.model == "shannon":
        x = r / net.bandwidth_hz
        log2_num = np.where(x > 50.0, x + np.log2(-np.expm1(-x * LN2)), np.log2(np.expm1(x * LN2)))
        p_tx = net.max_power_w * np.power(2.0, log2_num - log2_k)
    else:
        p_tx = net.alpha_w_per_bps * r + net.beta_w
    e_tx = np.where(sent > 0.0, p_tx * (sent / r), 0.0)
    return e_compute + e_tx, e_tx


def _transpose(a: np.ndarray, block: int = 256) -> np.ndarray:
    """``a.T`` as a C-contiguous copy, copied in blocks of rows (several times faster than a
    plain strided copy of a (slots, lanes) record)."""
    out = np.empty((a.shape[1], a.shape[0]), dtype=a.dtype)
    for i in range(0, a.shape[0], block):
        out[:, i : i + block] = a[i : i + block].T
    return out


def _pair_key(cfg: LyapunovConfig) -> tuple:
    return (cfg.fixed_cut, cfg.fixed_level, cfg.dvfs if cfg.fixed_level is None else None)


def simulate_batch(system: SystemModel, lanes: Sequence[Lane], *, buffer_frames: int = 1000,
                   edge: EdgeProfile | None = None) -> list[SimResult]:
    """Run every lane over the same number of slots; one :class:`SimResult` per lane, in order.

    Equivalent to ``simulate(system, policy, lane.capacity_bps, lane.arrival_times_s,
    buffer_frames=..., time_decisions=False)`` for each lane (decision times are not measured:
    ``decision_ns`` is 0) while no lane shares an edge. Lanes with the same ``Lane.edge >= 0``
    are the devices of one run sharing one edge of profile ``edge`` (:mod:`simulation.edge`):
    their tails queue and batch there, and each device's controller sees the edge's backlog
    (``Observation.edge_wait_s``) every slot; their summaries gain ``edge``.
    """
    if not lanes:
        return []
    n_slots = int(len(lanes[0].capacity_bps))
    if any(len(lane.capacity_bps) != n_slots for lane in lanes):
        raise ValueError("all lanes of a batch must have the same number of slots")
    if n_slots == 0:
        raise ValueError("a run needs at least one slot")
    # order lanes so every decider group is one contiguous slice (views, no gathers per slot)
    lyap = [i for i, lane in enumerate(lanes) if isinstance(lane.policy, LyapunovConfig)]
    sched = [i for i, lane in enumerate(lanes) if isinstance(lane.policy, Schedule)]
    if len(lyap) + len(sched) != len(lanes):
        bad = next(lane for lane in lanes if not isinstance(lane.policy, (LyapunovConfig, Schedule)))
        raise TypeError(f"lane {bad.name!r}: policy must be a LyapunovConfig or a Schedule, got {type(bad.policy).__name__}")
    keys: dict[tuple, list[int]] = {}
    for i in lyap:
        keys.setdefault(_pair_key(lanes[i].policy), []).append(i)
    order: list[int] = []
    groups: list = []
    for members in keys.values():
        sl = slice(len(order), len(order) + len(members))
        groups.append(_LyapunovGroup(system, [lanes[i].policy for i in members], sl))
        order += members
    if sched:
        sl = slice(len(order), len(order) + len(sched))
        groups.append(_ScheduleGroup(system, [lanes[i].policy for i in sched], sl, n_slots))
        order += sched
    ordered = [lanes[i] for i in order]
    S = len(ordered)
    edge_of = np.array([lane.edge for lane in ordered], dtype=np.int64)
    shared = None
    if (edge_of >= 0).any():
        if edge is None:
            raise ValueError("lanes share an edge (Lane.edge >= 0) but no edge profile was given")
        shared = SharedEdges(edge, system, edge_of, n_slots)

    tau = system.slot_s
    horizon = n_slots * tau
    # lanes that share a capacity array (the V values of one trace) share its exogenous series
    column: dict[int, int] = {}
    unique = []
    col_of = np.empty(S, np.int64)
    for j, lane in enumerate(ordered):
        key = id(lane.capacity_bps)
        if key not in column:
            column[key] = len(unique)
            unique.append(np.asarray(lane.capacity_bps, dtype=float))
        col_of[j] = column[key]
    cap_u = np.stack(unique, axis=1)
    cap = np.ascontiguousarray(cap_u[:, col_of])
    arrivals_sorted = []
    arr_slots = []
    per_slot = np.zeros((n_slots, S), np.int64)
    for j, lane in enumerate(ordered):
        a = np.sort(np.asarray(lane.arrival_times_s, dtype=float))
        a = a[(a >= 0) & (a < horizon)]
        s_idx = np.minimum((a // tau).astype(np.int64), n_slots - 1)
        arrivals_sorted.append(a)
        arr_slots.append(s_idx)
        per_slot[:, j] = np.bincount(s_idx, minlength=n_slots)
    # arrival offsets within their slot, one row per lane padded with inf; first[t, j] is the
    # row index of lane j's first arrival of slot t
    width = max((len(a) for a in arrivals_sorted), default=0) + 1
    offsets = np.full((S, width), np.inf)
    for j, (a, s_idx) in enumerate(zip(arrivals_sorted, arr_slots)):
        offsets[j, : len(a)] = a - s_idx * tau
    first_arrival = np.ascontiguousarray(np.cumsum(per_slot, axis=0) - per_slot)
    most = per_slot.max(axis=1).tolist()
    lane_idx = np.arange(S)

    F = system.n_levels
    head_flat = np.ascontiguousarray(system.head_s.ravel())
    bits = system.bits
    switch_s = float(system.board.switch_latency_s)
    net = system.network
    shannon = net.model == "shannon"
    log2_k = shannon_log2_k_array(cap_u, net.bandwidth_hz).reshape(cap_u.shape)[:, col_of] if shannon else None
    rec = {
        "cut": np.zeros((n_slots, S), np.int16),
        "level": np.zeros((n_slots, S), np.int16),
        "r": np.zeros((n_slots, S)),
        "sent": np.zeros((n_slots, S)),
        "qc": np.zeros((n_slots, S)),
        "qx": np.zeros((n_slots, S)),
        "busy": np.zeros((n_slots, S)),
        "done": np.zeros((n_slots, S), np.int64),
        "switch": np.zeros((n_slots, S)),
        "progress": np.zeros((n_slots, S)),
        "admitted": np.zeros((n_slots, S), np.int64),
        "process": np.zeros((n_slots, S), bool),
    }
    rec_vq = {name: np.zeros((n_slots, S)) for name in ("Z_E", "Z_T", "Z_L")}
    r_cut, r_level, r_r, r_sent, r_qc, r_qx = rec["cut"], rec["level"], rec["r"], rec["sent"], rec["qc"], rec["qx"]
    r_busy, r_done, r_switch, r_progress = rec["busy"], rec["done"], rec["switch"], rec["progress"]
    r_admitted, r_process = rec["admitted"], rec["process"]
    lyap_groups = [g for g in groups if isinstance(g, _LyapunovGroup)]
    observers = [g for g in lyap_groups if g.any_obs]
    # the slot's energy is needed inside the loop only by an energy-budget virtual queue;
    # otherwise it is computed for all slots at once after the run (the same formula)
    energy_in_loop = any(g.needs_energy for g in lyap_groups)

    for g in groups:
        g.reset()
        g.prepare(None if log2_k is None else log2_k[:, g.sl])
    queued = np.zeros(S, np.int64)
    progress = np.zeros(S)
    qx = np.zeros(S)
    prev_level = np.zeros(S, np.int64)
    cut = np.zeros(S, np.int64)
    level = np.zeros(S, np.int64)
    rate = np.zeros(S)
    process = np.zeros(S, bool)
    admit = np.zeros(S, bool)
    no_switch = np.zeros(S)
    no_arrivals = np.zeros(S, np.int64)
    lyap_mask = np.zeros(S, bool)
    for g in lyap_groups:
        lyap_mask[g.sl] = True
    minimum = np.minimum
    energy = None
    edge_wait = None if shared is None else shared.wait  # None: the edge is never a bottleneck

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for t in range(n_slots):
            c_t = cap[t]
            qc_obs = queued - progress
            prev_arrivals = per_slot[t - 1] if t else no_arrivals
            for g in groups:
                g.decide(qc_obs, qx, c_t, prev_arrivals, edge_wait, cut, level, rate, process, admit)
            # a clock change costs the switch latency (not before the first slot)
            switch = (level != prev_level) * switch_s if (t and switch_s) else no_switch
            np.copyto(prev_level, level)

            # -- the slot: simulation.dynamics.slot_step, as simulate() runs it ------------------
            T = head_flat[cut * F + level]
            r = minimum(rate, c_t)
            r_qx[t] = qx
            r_progress[t] = progress
            k = most[t]
            slot_offsets = [offsets[lane_idx, np.minimum(first_arrival[t] + i, width - 1)] for i in range(k)]
            done, busy, progress, queued, admitted, sent, qx = slot_step(
                ARRAY, tau, T, bits[cut], switch, process, r, queued, progress, qx, slot_offsets,
                per_slot[t], admit, buffer_frames,
            )
            done = done.astype(np.int64)
            queued = queued.astype(np.int64)
            if shared is not None:
                shared.step(done, cut, sent)  # updates edge_wait (shared.wait) in place

            if energy_in_loop:
                energy = _slot_energy(system, busy, level, r, sent, c_t, None if log2_k is None else log2_k[t])[0]
            for g in lyap_groups:
                g.observe(energy, done, sent)

            r_cut[t] = cut
            r_level[t] = level
            r_r[t] = r
            r_sent[t] = sent
            r_qc[t] = qc_obs
            r_busy[t] = busy
            r_done[t] = done
            r_switch[t] = switch
            r_admitted[t] = admitted
            r_process[t] = process
            for g in observers:
                for name, z in g.virtual_queues().items():
                    rec_vq[name][t, g.sl] = z


    # -- per lane: energy, then the simulator's own per-frame reconstruction and summary -------
    # In chunks of lanes: each chunk's records are transposed to (lanes, slots) while they are
    # in cache, and the energy of all its slots is computed at once (simulate()'s formulas).
    results: list[SimResult | None] = [None] * S
    time_s = np.arange(n_slots) * tau
    chunk = 64
    for j0 in range(0, S, chunk):
        j1 = min(j0 + chunk, S)
        cols = {k: _transpose(v[:, j0:j1]) for k, v in rec.items()}
        vq_cols = {k: _transpose(v[:, j0:j1]) for k, v in rec_vq.items()}
        cap_c = _transpose(cap[:, j0:j1])
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            cols["energy"], cols["tx"] = _slot_energy(
                system, cols["busy"], cols["level"].astype(np.int64), cols["r"], cols["sent"], cap_c,
                None if log2_k is None else _transpose(log2_k[:, j0:j1]),
            )
        cols["rate"] = np.where(cols["sent"] > 0.0, cols["r"], 0.0)
        for jj in range(j1 - j0):
            j = j0 + jj
            level_j = cols["level"][jj]
            slots = {
                "time_s": time_s,
                "capacity_bps": cap_c[jj],
                "cut": cols["cut"][jj],
                "level": level_j,
                "gpu_hz": system.levels_hz[level_j],
                "rate_bps": cols["rate"][jj],
                "sent_bits": cols["sent"][jj],
                "Qc_frames": cols["qc"][jj],
                "Qx_bits": cols["qx"][jj],
                "energy_j": cols["energy"][jj],
                "tx_energy_j": cols["tx"][jj],
                "busy_s": cols["busy"][jj],
                "heads_done": cols["done"][jj],
                "admitted": cols["admitted"][jj],
                "arrivals": per_slot[:, j].copy(),
                "decision_ns": np.zeros(n_slots, np.int64),
                "process": cols["process"][jj],
            }
            if lyap_mask[j]:
                slots.update({k: v[jj] for k, v in vq_cols.items()})
            slots["switch_s"] = cols["switch"][jj]
            slots["progress"] = cols["progress"][jj]
            frames = frame_times(system, arrivals_sorted[j], arr_slots[j], slots)
            res = SimResult(slot_s=tau, slots=slots, frames=frames,
                            end={"queued_frames": int(queued[j]), "queued_bits": float(qx[j])})
            if edge_of[j] < 0:
                res.summary = summarize(res, ordered[j].name, system.cut_names)
            results[order[j]] = res
    if shared is not None:
        # the devices sharing an edge: their tails' completions on it, then their summaries
        for e in range(shared.E):
            js = np.flatnonzero(edge_of == e).tolist()
            group = [results[order[j]] for j in js]
            stats = apply_edge(shared, e, js, group, system)
            for j, res in zip(js, group):
                res.summary = summarize(res, ordered[j].name, system.cut_names)
                res.summary["edge"] = stats
    return results  # type: ignore[return-value]


__all__ = ["Lane", "Schedule", "shannon_log2_k_array", "simulate_batch", "tx_power_w_array"]
