"""The CutEdge controller: Lyapunov drift-plus-penalty over real and virtual queues.

Each slot it minimises (DESIGN section 3, ``docs/controller.md`` for every term)

    V*E(t) - (floor(Q_c) + P(t))*n + (Q_x/B^2 + V*gamma_x)*n*D(p) - (...)*r*tau + latency terms

over the cut p, the GPU level f, the rate r and admission d. The problem separates:

- **(p, f)**: with n = min(Q_c + a_hat*phi, tau/T_loc(p, f)) heads this slot (queued frames and
  the arrival estimate: frames arriving in a slot start in it, each for the share phi of its head
  its own slot gives it, from the learnt camera phase), every pair is evaluated at once by at most
  three matrix-vector products over precomputed rows (the pairs the supply saturates, those that
  run part of an arrival, the rest; no Python loop per pair, no per-slot allocation). Idling the
  GPU is always a candidate.
- **rate**: minimise ``V_E*P_tx(r) - w_r*r`` on [0, min(C, (Q_x + n*D)/tau)]: water-filling for
  the Shannon power law (closed form, clipped), bang-bang for the linear one. When that sends
  everything, the radio may go faster than ``bits/tau`` and finish early: the rate in
  [bits/tau, C] minimising energy plus the frames' completion times (a Lambert-W closed form
  under Shannon, the capacity under the linear law).
- **multipliers** (on by default): the bit queue's weight is offset by V times the long-run
  marginal energy of a bit (gamma_x, J/bit), learnt online from the past slots (a multiplicative
  stochastic dual step of the stationary LP; Huang and Neely, IEEE TAC 2011), and a frame is
  worth its price P(t): the cheapest way to serve it now among the pairs that keep up (energy,
  bits at gamma_x, latency), so energy is saved without an O(V) backlog.
- **completion times** (omega = ``latency_weight_per_s``): a faster clock that finishes the same
  frames earlier is worth something, and so is the time after the head (bits, RTT, tail); heads
  run one after the other on the GPU and their bits leave one after the other on the uplink, so
  the k-th frame of the slot waits for the k-1 before it on both.
- **uplink age** (on by default): a bit's rate weight also counts how long the oldest bits on the
  uplink have waited (omega per frame-second, spread over a frame's bits), so bits that met a
  fade leave within a wait that grows with V instead of waiting for the link to come back.
- **admission** (when switched on): admit iff ``Q_c < V*theta`` (theta: a frame's value in J).

Units, and why they make V meaningful
-------------------------------------
Queues are weighed in *frames*: Q_c is a frame count and the bit backlog Q_x enters as
``q_x = Q_x / B`` with ``B`` (``queue_unit_bits``, default D(0), the bits of one input frame) so
a bit backlog and a frame backlog have comparable weight. Weighing Q_x in raw bits would make the
bit term ~1e6 times larger than everything else and leave V with no effect. The penalty is the
slot's device energy in joules, so **V is in frames^2 per joule**: V = 100 says "one joule saved
is worth as much drift as a backlog of 10 frames". Useful range about 1 to 1e4 (see
``docs/controller.md``); below it the controller drains queues at any energy cost, above it the
backlog grows O(V) while the energy approaches the optimum as O(1/V).

Virtual queues (each on only when its constraint is configured):

- energy budget P_avg: ``Z_E <- max(Z_E + (E - P_avg*tau)/(P_avg*tau), 0)`` (in budget-slots),
  raising the energy weight to ``V + Z_E/(P_avg*tau)``;
- throughput floor lambda_min: ``Z_T <- max(Z_T + lambda_min*tau - n, 0)`` (frames);
- latency (epsilon-persistence): ``Z_L <- max(Z_L + eps*1{Q_c+Q_x>0} - served, 0)``, each frame's
  service counted once: a head at cut p serves ``1 - D(p)/D_max`` of it, its bits the rest.
"""

from __future__ import annotations

import math
from bisect import bisect_left as _bisect_left
from dataclasses import dataclass, replace

import numpy as np

from controller.model import LN2, SystemModel, shannon_log2_k
from controller.ops import SCALAR
from controller.policy import Decision, Observation, Outcome
from controller.profiles import NetworkProfile

_dot = np.dot

DEFAULT_V = 30.0
PRICE_EVERY_SLOTS = 10
"""Decisions between two refreshes of the frame price (keeps the slot decision within budget)."""
BIG_RATE = 1e12  # frames a slot for a zero-time head (cut 0): limited by the queue only
ROWS = 8
"""Rows of the pair objective: n*dE, n*D, n*post, n*1{D>0}, idle, n, H*T, n(n+1)/2*D, with
H = n(n+1)/2 for a pair the supply saturates, Q_c(Q_c+1)/2 + a_hat*phi for the others."""
FRAME_MARGIN = 0.05
"""How far a frame's weight sits above the cheapest way to serve it now (objective units), so a
frame that can be served is, rather than tying with an idle GPU."""
AGE_RING_CHUNKS = 1024
"""Chunks (slots whose heads made bits) of history the uplink's head-of-line age is read from, a
power of 2; the last entry is scratch, so the front is never older than the last 1023 chunks
(more bits waiting than that count as that young: they are as urgent as any by then)."""


@dataclass(frozen=True)
class LyapunovConfig:
    """The controller's knobs. Every switch of the objective is a field; the defaults are the
    ones the figures in ``docs/controller.md`` are measured with."""

    V: float = DEFAULT_V
    queue_unit_bits: float | None = None
    energy_budget_w: float | None = None
    throughput_floor_fps: float | None = None
    latency_epsilon: float | None = None
    admission_frame_value_j: float | None = None
    dvfs: bool = True
    rate_control: bool = True
    virtual_queues: bool = True
    fixed_cut: int | None = None
    fixed_level: int | None = None
    multipliers: bool = True
    multiplier_gain: float = 0.08
    multiplier_window_slots: float = 15.0
    latency_weight_per_s: float | None = None
    arrival_ewma: float = 0.1
    arrival_phase: bool = True
    uplink_age: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.V) and self.V >= 0):
            raise ValueError(f"V must be finite and >= 0, got {self.V}")
        for name in ("queue_unit_bits", "energy_budget_w", "throughput_floor_fps", "latency_epsilon", "admission_frame_value_j"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be > 0, got {v}")
        if not (math.isfinite(self.multiplier_gain) and self.multiplier_gain > 0):
            raise ValueError(f"multiplier_gain must be > 0, got {self.multiplier_gain}")
        if not (math.isfinite(self.multiplier_window_slots) and self.multiplier_window_slots >= 1):
            raise ValueError(f"multiplier_window_slots must be >= 1, got {self.multiplier_window_slots}")
        w = self.latency_weight_per_s
        if w is not None and not (math.isfinite(w) and w >= 0):
            raise ValueError(f"latency_weight_per_s must be >= 0, got {w}")
        if not (0.0 < self.arrival_ewma <= 1.0):
            raise ValueError(f"arrival_ewma must be in (0, 1], got {self.arrival_ewma}")

    def latency_weight(self, slot_s: float) -> float:
        """omega (frames/s): the weight of a frame-second of latency (default: one per slot)."""
        return 1.0 / slot_s if self.latency_weight_per_s is None else float(self.latency_weight_per_s)


@dataclass(frozen=True, eq=False)
class PairTables:
    """The (cut, level) pairs a config may choose, in the order the pair search scans them.

    Shared by :class:`LyapunovController` and the batched engine (``simulation.batchsim``), so
    both evaluate the same rows in the same order and break ties the same way.
    """

    cut: np.ndarray        # (K,) cut index of each pair (pairs by ascending mu, ties cut-major)
    level: np.ndarray      # (K,) GPU level index of each pair
    mu: np.ndarray         # (K,) heads one slot can finish (BIG_RATE for a zero-time head)
    per_frame: np.ndarray  # (2, K) per head: extra energy dE (J), bits D (bit)
    head_s: np.ndarray     # (K,) T_loc of the pair (s)
    post_s: np.ndarray     # (K,) after the head: RTT + tail + the result's trip (0 at the local cut)
    idle_j: np.ndarray     # (K,) tau * P_idle(level): the slot's idle energy at the pair's level
    idle_level: int        # the level an idle GPU parks at (least idle power among the allowed)
    idle_cost_j: float     # tau * P_idle(idle_level)


def pair_tables(system: SystemModel, config: LyapunovConfig) -> PairTables:
    """Pairs allowed by ``config`` (fixed cut/level, DVFS on or off) and their constants."""
    tau = system.slot_s
    P, F = system.n_cuts, system.n_levels
    cuts = np.arange(P) if config.fixed_cut is None else np.array([config.fixed_cut])
    if config.fixed_level is not None:
        levels = np.array([config.fixed_level])
    elif config.dvfs:
        levels = np.arange(F)
    else:
        levels = np.array([F - 1])
    if cuts.min() < 0 or cuts.max() >= P:
        raise ValueError(f"fixed_cut {config.fixed_cut} outside [0, {P})")
    if levels.min() < 0 or levels.max() >= F:
        raise ValueError(f"fixed_level {config.fixed_level} outside [0, {F})")
    pc, fc = np.meshgrid(cuts, levels, indexing="ij")
    pair_cut = pc.ravel().astype(np.int64)
    pair_level = fc.ravel().astype(np.int64)
    head = system.head_s[pair_cut, pair_level]
    with np.errstate(divide="ignore"):
        mu = np.where(head > 0, tau / np.where(head > 0, head, 1.0), BIG_RATE)
    dE = system.extra_energy_j()[pair_cut, pair_level]
    bits = system.bits[pair_cut].astype(float)
    net = system.network
    post = np.where(bits > 0, net.rtt_s + system.tail_s[pair_cut] + system.result_bits / net.downlink_bps, 0.0)
    best_idle = levels[np.argmin(system.idle_w[levels])]
    # by ascending mu: the pairs a slot's supply s saturates (mu < s) are then a prefix
    # (LyapunovController.decide evaluates the two parts with one product each)
    o = np.argsort(mu, kind="stable")
    return PairTables(
        cut=pair_cut[o],
        level=pair_level[o],
        mu=np.ascontiguousarray(mu[o]),
        per_frame=np.ascontiguousarray(np.stack([dE[o], bits[o]])),
        head_s=np.ascontiguousarray(head[o]),
        post_s=np.ascontiguousarray(post[o]),
        idle_j=np.ascontiguousarray(tau * system.idle_w[pair_level[o]]),
        idle_level=int(best_idle),
        idle_cost_j=tau * float(system.idle_w[best_idle]),
    )


@dataclass(frozen=True, eq=False)
class ObjectiveRows:
    """The rows a pair's objective is a product with (shared by the controller and the batch
    engine): ``unit`` (ROWS, K) at one head (n = s on every row), ``at_mu`` the same at n = mu
    (a pair the supply saturates), ``lin`` (2*ROWS + 1, K) for n = Q_c + b*mu (the unit rows,
    mu times them, and mu^2*D/2)."""

    unit: np.ndarray
    at_mu: np.ndarray
    lin: np.ndarray


def objective_rows(tables: PairTables) -> ObjectiveRows:
    """The :class:`ObjectiveRows` of the pairs of ``tables`` (rows as :data:`ROWS` lists them)."""
    dE, D = tables.per_frame
    K = D.size
    unit = np.stack([dE, D, tables.post_s, (D > 0).astype(float), tables.idle_j, np.ones(K),
                     0.5 * tables.head_s, 0.5 * D])
    mu = tables.mu
    scale_mu = np.stack([mu, mu, mu, mu, np.ones(K), mu, mu * (mu + 1.0), mu * (mu + 1.0)])
    mu_f = np.where(mu < BIG_RATE, mu, 0.0)  # a zero-time head always has phi = 1
    lin = np.vstack([unit, unit * mu_f, (mu_f * mu_f * 0.5 * D)[None, :]])
    return ObjectiveRows(unit=np.ascontiguousarray(unit), at_mu=np.ascontiguousarray(unit * scale_mu),
                         lin=np.ascontiguousarray(lin))


@dataclass(frozen=True, eq=False)
class PriceTables:
    """What a frame's price is computed from (shared by the controller and the batch engine).

    Serving one frame at pair k costs ``A_k + omega*D_k/C`` with ``A_k`` the product of the rows
    (head energy, idle premium, head + trip + tail time, bits) with (V_E, V_E/lambda, omega, bit
    price); the pairs are grouped by bits (``order``, group ``starts``), one slope per group."""

    order: np.ndarray   # (K,) pair indices by ascending bits (ties by pair index)
    starts: np.ndarray  # (G,) first position of each group of equal bits in ``order``
    bits: np.ndarray    # (G,) the group's bits per head
    rows: np.ndarray    # (4, K) dE, idle premium, latency (s), bits of the pairs in ``order``
    cap: tuple[float, float, float]  # (dE max, premium max, latency max): price <= v_e*(e + i/lam) + omega*l


def price_tables(tables: PairTables, slot_s: float) -> PriceTables:
    """The frame price's rows and groups for the pairs of ``tables`` (see :class:`PriceTables`)."""
    dE, D = tables.per_frame
    K = D.size
    order = np.lexsort((np.arange(K), D))
    sb = D[order]
    starts = np.flatnonzero(np.concatenate([[True], sb[1:] != sb[:-1]]))
    premium = tables.idle_j - tables.idle_cost_j
    latency = tables.post_s + tables.head_s
    rows = np.ascontiguousarray(np.stack([dE[order], premium[order], latency[order], D[order]]))
    cap = (float(dE.max()), float(premium.max()), slot_s + 2.0 * float(tables.head_s.max()) + float(tables.post_s.max()))
    return PriceTables(order=order, starts=starts, bits=sb[starts], rows=rows, cap=cap)


def initial_bit_price(network: NetworkProfile, capacity_bps: float) -> float:
    """gamma_x (J/bit) to start from: a bit at its full-rate radio energy on the first capacity
    seen (0 on a dead link). The online step moves it to the long-run marginal energy; a good
    start only shortens the learning."""
    return float(bit_price_j_per_bit(network, capacity_bps)) if capacity_bps > 0.0 else 0.0


def bit_price_floor(network: NetworkProfile) -> float:
    """The least gamma_x (J/bit) the multiplicative step may fall to: a millionth of a bit's
    radio energy on a 1 Tbit/s link, so a price that reached 0 (a dead first slot) can grow."""
    return 1e-6 * float(bit_price_j_per_bit(network, 1e12))


def bit_price_j_per_bit(network: NetworkProfile, mean_capacity_bps):
    """Radio energy of one bit sent at full rate on a link of ``mean_capacity_bps`` (J/bit).

    Works on floats and on numpy arrays (the caller handles a capacity <= 0).
    """
    if network.model == "shannon":
        return network.max_power_w / mean_capacity_bps
    return network.alpha_w_per_bps + network.beta_w / mean_capacity_bps


def shannon_rate_bps(w_r, v_e, network: NetworkProfile, log2_k, log2=math.log2):
    """Stationary point of ``v_e*P_tx(r) - w_r*r`` for the Shannon power law (before clipping).

    d/dr: v_e*P_max*ln2/(W*K)*2^(r/W) = w_r  ->  r = W*(log2(w_r*W/(v_e*P_max*ln2)) + log2 K),
    with ``log2_k = log2(2^(C/W) - 1)``. ``log2`` is ``math.log2`` for the scalar controller and
    ``np.log2`` for the batched engine (they may differ in the last bit on some CPUs).
    """
    W = network.bandwidth_hz
    return W * (log2(w_r * W / (v_e * network.max_power_w * LN2)) + log2_k)


def linear_send_gain(w_r, v_e, network: NetworkProfile, r_max):
    """``w_r*r - v_e*(alpha*r + beta)`` at ``r = r_max``: send at ``r_max`` iff it is > 0."""
    return (w_r - v_e * network.alpha_w_per_bps) * r_max - v_e * network.beta_w


def lambert_w0(x, ops=SCALAR):
    """The principal branch W0(x), x >= -1/e (``w*e^w = x``): three Halley steps from a start
    close to it (the branch-point series below 0, Winitzki's approximation above); relative error
    below 1e-8 over [-1/e, 1e250]. Written against ``ops``: one code for floats and for arrays."""
    p = ops.sqrt(ops.maximum(ops.minimum(2.0 * (math.e * x + 1.0), 2.0), 0.0))
    near = -1.0 + p * (1.0 + p * (-1.0 / 3.0 + p * (11.0 / 72.0)))
    lg = ops.log1p(ops.maximum(x, 0.0))
    w = ops.where(x < 0.0, near, lg * (1.0 - ops.log1p(lg) / (2.0 + lg)))
    for _ in range(3):
        ew = ops.exp(w)
        f = w * ew - x
        w1 = ops.maximum(w + 1.0, 1e-12)
        w = w - f / (ew * w1 - (w + 2.0) * f / (2.0 * w1))
    return ops.maximum(w, -1.0)


def shannon_fast_rate(c_w, network: NetworkProfile, log2_k, ops=SCALAR):
    """The rate r (bit/s, before clipping) where ``r*P'(r) - P(r) = c_w`` under the Shannon law.

    Sending b bits at r >= b/tau costs ``v_e*b*P(r)/r`` of energy and ``omega*H/r`` of latency
    (``H``: the frames' bits weighted by their place in the queue); its minimum over r has
    ``r*P'(r) - P(r) = omega*H/(v_e*b) = c_w``. With ``P = (P_max/K)(2^(r/W) - 1)`` and
    ``y = r*ln2/W`` that is ``e^y (y - 1) = c_w*K/P_max - 1``, so ``y = 1 + W0((c_w*K/P_max - 1)/e)``.
    ``log2_k = log2(2^(C/W) - 1)`` (capped at 500: a rate above the capacity is clipped anyway).
    """
    k = ops.exp(LN2 * ops.minimum(log2_k, 500.0))
    y = 1.0 + lambert_w0((c_w * k / network.max_power_w - 1.0) / math.e, ops)
    return y * (network.bandwidth_hz / LN2)


class LyapunovController:
    """Drift-plus-penalty controller for one device; pure numpy, no hardware.

    Build once per (system, config); ``reset`` clears the virtual queues and the multipliers.
    ``decide`` is the hot path: a few numpy calls on preallocated buffers and a closed-form rate.
    """

    name = "cutedge"

    def __init__(self, system: SystemModel, config: LyapunovConfig = LyapunovConfig()):
        self.config = config
        self._build(system)
        self.reset()

    def retable(self, system: SystemModel) -> None:
        """Decide from ``system``'s tables from now on, keeping the queues, multipliers and
        estimates (online calibration: ``controller.calibration``). The cuts, levels and bits
        must be those of the current system."""
        if system.head_s.shape != self.system.head_s.shape:
            raise ValueError(f"retable: tables of shape {system.head_s.shape}, expected {self.system.head_s.shape}")
        self._build(system)  # the frame's price follows at its next refresh (PRICE_EVERY_SLOTS)

    def _build(self, system: SystemModel) -> None:
        """Everything the decision precomputes from the system's tables."""
        self.system = system
        config = self.config
        tau = system.slot_s
        tables = pair_tables(system, config)
        self.tables = tables
        self._mu = tables.mu
        K = self._mu.size
        # the objective of a pair running n heads is w @ rows(n), with the ROWS rows and
        # n = min(mu, s_k), s_k = Q_c + a_hat*phi_k (phi_k = min(1, rho/T_k): the share of an
        # arriving frame's head its own slot can run). Pairs come by ascending mu, and the
        # saturated pairs (mu < s_k) are then a prefix; the rest split into those with phi < 1
        # (n linear in mu: `_lin_rows`, the unit rows, mu times them and mu^2*D/2) and those
        # with phi = 1 (n = Q_c + a_hat: the unit rows). Three mat-vec products a slot at most.
        rows = objective_rows(tables)
        self._unit_rows, self._at_mu, self._lin_rows = rows.unit, rows.at_mu, rows.lin
        self._w = np.zeros(ROWS)
        self._ws = np.zeros(ROWS)
        self._wl = np.zeros(2 * ROWS + 1)
        self._obj = np.empty(K)
        # views of the saturated prefix and of the last segment for every split j
        self._parts = [(self._at_mu[:, :j], self._obj[:j], self._unit_rows[:, j:], self._obj[j:]) for j in range(K + 1)]
        # the frame's price: one product over the pairs grouped by bits (`price_tables`), with a
        # fifth row, the keep-up penalty (0 or inf)
        pt = price_tables(tables, tau)
        self._price_rows = np.ascontiguousarray(np.vstack([pt.rows, np.zeros((1, K))]))
        self._bits_starts = pt.starts
        self._group_slopes = (pt.bits * config.latency_weight(tau)).tolist()
        self._price_order = pt.order  # pairs are by ascending mu: a pair's index is its rank
        self._keep_from = -1  # the first pair (by mu) of the keep-up set the penalty row holds
        self._price_w = np.zeros(5)
        self._price_w[4] = 1.0
        self._cap_energy, self._cap_idle, self._cap_latency = pt.cap
        self._head_list = tables.head_s.tolist()
        self._K = K
        self._idle_level = tables.idle_level
        self._idle_cost = tables.idle_cost_j
        self._unit = float(config.queue_unit_bits or system.bits[0])
        if not self._unit > 0:
            raise ValueError("queue_unit_bits must be > 0 (the model's input cut sends no bits)")
        self._dmax = float(system.bits.max())
        net = system.network
        self._shannon = net.model == "shannon"
        self._tau = tau
        self._omega = config.latency_weight(tau)
        self._cut_list = tables.cut.tolist()
        self._level_list = tables.level.tolist()
        self._mu_list = self._mu.tolist()
        self._bits_list = tables.per_frame[1].tolist()
        self._cut_bits = system.bits.astype(float).tolist()
        self._mult = config.multipliers
        self._rate_gain = config.multiplier_gain / self._unit
        self._avg = 1.0 / config.multiplier_window_slots
        self._gx_min = bit_price_floor(system.network)
        self._budget_slot_j = (
            config.energy_budget_w * tau if (config.energy_budget_w is not None and config.virtual_queues) else 0.0
        )

    # -- state ---------------------------------------------------------------------------------
    def reset(self) -> None:
        self.z_energy = 0.0
        self.z_throughput = 0.0
        self.z_latency = 0.0
        self.gamma_c = 0.0  # J/frame: what serving a frame costs now, over V (decide)
        self.gamma_x = 0.0  # J/bit: a bit's, learnt online from the past slots
        self._gx_fast = 0.0  # the price the dual steps move; gamma_x is its window average
        self._price_age = PRICE_EVERY_SLOTS - 1  # the first decision computes it
        self._last_potential = -1.0  # bits the multiplier alone would have sent last slot
        self.arrival_estimate = 0.0
        self._started = False
        self._last_queues = 0.0
        self._last_bits = 0.0     # bits per head at its cut
        self._flow_bits = self._unit  # bits per frame of the last cut that sent any
        self.arrival_phase_s = self._tau  # head time an arrival gets in the slot it comes in (rho)
        self._last_run = None  # (Q_c, T, mu) of the last slot's heads; None if it idled
        self._made_bits = 0.0
        # the uplink's head-of-line age: per chunk (a slot whose heads made bits) the bits made up
        # to its end and its slot, in a ring; the chunks made so far, the bits made so far, and
        # the first chunk whose bits have not all left
        self._chunk_made = [0.0] * AGE_RING_CHUNKS
        self._chunk_slot = [0] * AGE_RING_CHUNKS
        self._chunks = 0
        self._made_total = 0.0
        self._age_front = 0
        self._slots_seen = 0
        self.uplink_age_s = 0.0  # the age the last decision weighed the uplink's bits by

    @property
    def virtual_queues(self) -> dict[str, float]:
        return {"Z_E": self.z_energy, "Z_T": self.z_throughput, "Z_L": self.z_latency}

    @property
    def multipliers(self) -> dict[str, float]:
        """gamma_c (J/frame) and gamma_x (J/bit): the prices the queue weights are offset by."""
        return {"gamma_c_j_per_frame": self.gamma_c, "gamma_x_j_per_bit": self.gamma_x}

    def with_config(self, **changes) -> LyapunovController:
        return LyapunovController(self.system, replace(self.config, **changes))

    # -- the slot decision ---------------------------------------------------------------------
    def energy_weight(self) -> float:
        """V_E = V + Z_E/(P_avg*tau): the weight of a joule this slot."""
        if self._budget_slot_j:
            return self.config.V + self.z_energy / self._budget_slot_j
        return self.config.V

    def _learn(self, arrivals: float, capacity: float) -> None:
        """Fold the previous slot into the bit multiplier and the arrival estimate (past only)."""
        if not self._started:
            self._started = True
            if self._mult:
                self.gamma_x = self._gx_fast = initial_bit_price(self.system.network, capacity)
            return
        if self._mult and self._last_potential >= 0.0:
            # stochastic dual step of the stationary LP, multiplicative (the price stays positive
            # and the step is scale-free): the bit price rises while the heads make more bits than
            # the rate that price buys would send, and falls while they make fewer
            x = self._rate_gain * (self._made_bits - self._last_potential)
            if x > 1.0:
                x = 1.0
            elif x < -1.0:
                x = -1.0
            g = self._gx_fast * math.exp(x)
            self._gx_fast = g if g > self._gx_min else self._gx_min
            # decisions use the price averaged over a window of slots: the stationary LP's price
            # does not follow each fade of the link (the real queues answer those)
            self.gamma_x += self._avg * (self._gx_fast - self.gamma_x)
        alpha = self.config.arrival_ewma
        self.arrival_estimate += alpha * (arrivals - self.arrival_estimate)

    def _refresh_price(self, v_e: float, z_l: float, lam: float) -> None:
        """The lines a frame's price is the least of: serving one frame now at pair k costs
        ``A_k + omega*D_k/C`` (``A_k``: its energy and idle-premium share at V_E, its bits at
        the bit price, its head, trip and tail as latency), over the pairs that alone keep up
        with the arrival estimate (mu >= a_hat: a clock too slow to keep up is no steady way to
        serve). Per group of equal bits only the least A matters, and of those only the ones no
        group with fewer bits undercuts. ``decide`` refreshes them every ``PRICE_EVERY_SLOTS``
        decisions (the prices and the estimate they follow move slowly); the capacity term is
        evaluated every slot."""
        j = _bisect_left(self._mu_list, self.arrival_estimate)
        if j != self._keep_from:
            self._keep_from = j
            keep = self._price_order >= j
            self._price_rows[4] = np.where(keep, 0.0, np.inf) if j < self._K else 0.0
        w = self._price_w
        w[0] = v_e
        w[1] = v_e / lam
        w[2] = self._omega
        w[3] = self.config.V * self.gamma_x + z_l / self._dmax
        least = np.minimum.reduceat(_dot(w, self._price_rows), self._bits_starts).tolist()
        lines = []
        best = math.inf
        for a, slope in zip(least, self._group_slopes):
            if a < best:
                best = a
                lines.append((a + FRAME_MARGIN, slope))
        self._price_lines = lines

    def _learn_phase(self, qc: float, arrivals: float) -> None:
        """Fold the last slot into rho, the head time an arriving frame gets in its own slot when
        the GPU is free for it (the camera's phase: a frame arriving 84 ms into a 100 ms slot
        gets 16 ms at any clock). The arrivals' work is what the slot did less the queued frames
        it ran first, in head times of its pair (``used``); it measures rho when the arrivals
        started after the GPU had finished the queue (at ``min(Q, mu)*T``), and bounds it from
        below when they ran from then on or finished."""
        run = self._last_run
        if run is None or arrivals <= 0.0:
            return
        lq, T, mu = run
        if T <= 0.0:
            return
        ahead = lq if lq < mu else mu
        frac = (lq + arrivals - qc - ahead) / arrivals
        used = (frac if frac > 0.0 else 0.0) * T
        rho = self.arrival_phase_s
        if frac >= 0.999 or used >= 0.99 * (self._tau - ahead * T):
            x = rho if rho > used else used  # censored: rho is at least what they got
        else:
            x = used
        rho += self.config.arrival_ewma * (x - rho)
        self.arrival_phase_s = rho if rho > 1e-6 else 1e-6

    def decide(self, obs: Observation) -> Decision:
        # The hot path: scalars in plain Python, the pair search in a few numpy calls on
        # preallocated buffers.
        _, qc, qx, capacity, arrivals, edge_wait = obs
        if qc < 0.0:
            qc = 0.0
        if qx < 0.0:
            qx = 0.0
        self._learn(float(arrivals), capacity)
        cfg = self.config
        if cfg.arrival_phase:
            self._learn_phase(qc, float(arrivals))
        unit = self._unit
        V = cfg.V
        v_e = V
        if self._budget_slot_j:
            v_e += self.z_energy / self._budget_slot_j
        omega = self._omega
        tau = self._tau
        a_hat = self.arrival_estimate
        supply = qc + a_hat  # frames the slot can work on: queued and arriving
        z_l = self.z_latency
        g_x = self.gamma_x
        mult = self._mult
        lam = a_hat if a_hat > 0.05 else 0.05  # frames sharing a slot's idle premium
        if mult:
            self._price_age += 1
            if self._price_age >= PRICE_EVERY_SLOTS:
                self._price_age = 0
                self._refresh_price(v_e, z_l, lam)
        w_bits = qx / (unit * unit) + V * g_x  # weight of a bit on the uplink queue
        w = self._w
        w[0] = v_e
        # a head's bits are queued (w_bits) and sent at about the capacity, after the bits queued
        # ahead of them (omega*Q_x/C) and those of the slot's earlier heads (the last row)
        c1 = capacity if capacity > 1.0 else 1.0
        w1 = w_bits + z_l / self._dmax
        # an offloaded frame also waits behind the edge's backlog (the price a shared edge
        # broadcasts: devices back off while it is busy)
        w3 = omega * (qx / c1 + edge_wait) if edge_wait > 0.0 else omega * qx / c1
        w[1] = w1
        w[2] = omega
        w[3] = w3
        w[4] = v_e
        w[6] = omega
        w[7] = omega / c1
        if mult:
            # the frame's price: the cheapest way to serve one frame now (its energy at V_E, its
            # bits at their price, its latency at the capacity now, its share of the level's idle
            # premium) over the pairs that keep up, plus a margin, capped; the front frame's
            # unfinished part is no backlog of its own
            x = 1.0 / c1
            if edge_wait > 0.0:
                e = omega * edge_wait
                price = min([a + b * x + (e if b else 0.0) for a, b in self._price_lines])  # as the batch engine adds
            else:
                price = min([a + b * x for a, b in self._price_lines])
            cap = v_e * (self._cap_energy + self._cap_idle / lam) + omega * self._cap_latency
            if price > cap:
                price = cap
            self.gamma_c = price / V if V > 1e-12 else 0.0  # (reported only; V below 1e-12 is V = 0)
            w[5] = -(math.floor(qc + 1e-9) + price + self.z_throughput + z_l)
        else:
            w[5] = -(qc + omega * tau + self.z_throughput + z_l)
        # heads this slot at pair k: n = min(mu, s_k), s_k = Q_c + a_hat*phi_k with
        # phi_k = min(1, rho*mu_k/tau) (1 at a zero-time head). s_k - mu_k falls with mu, so the
        # saturated pairs (mu < s_k) are a prefix [0, j): when s < tau/rho it ends inside the
        # phi < 1 pairs (mu < Q_c/(1 - b), b = a_hat*rho/tau), else at mu = s
        rho = self.arrival_phase_s
        lim = tau / rho if cfg.arrival_phase else 0.0  # the pairs with mu >= lim have phi = 1
        mu_list = self._mu_list
        if supply >= lim:
            j = _bisect_left(mu_list, supply)
            j1 = j
        else:
            b = a_hat / lim
            j = _bisect_left(mu_list, qc / (1.0 - b))
            j1 = _bisect_left(mu_list, lim)
            if j1 < j:
                j1 = j
        at_mu, obj_sat, unit_rows, obj_free = self._parts[j1]
        if j == j1:
            if j:
                _dot(w, at_mu, out=obj_sat)
        elif j:
            _dot(w, at_mu[:, :j], out=obj_sat[:j])
        if j < j1:
            # phi < 1, unsaturated: n = Q_c + b*mu; the heads' completions Q_c(Q_c+1)/2*T plus
            # a_hat*phi*T = a_hat*rho each; the bits' n(n+1)/2 expands in mu and mu^2
            wl = self._wl
            q1 = qc * (qc + 1.0)
            wl[0] = v_e * qc
            wl[1] = w1 * qc
            wl[2] = omega * qc
            wl[3] = w3 * qc
            wl[4] = v_e
            wl[5] = w[5] * qc + omega * a_hat * rho
            wl[6] = omega * q1
            wl[7] = w[7] * q1
            wl[8] = v_e * b
            wl[9] = w1 * b
            wl[10] = omega * b
            wl[11] = w3 * b
            wl[13] = w[5] * b
            wl[15] = w[7] * b * (2.0 * qc + 1.0)
            wl[16] = w[7] * b * b
            _dot(wl, self._lin_rows[:, j:j1], out=self._obj[j:j1])
        if j1 < self._K:
            # n = s on every row; heads: the queued frames back to back, then each arrival T after
            # it comes (the GPU has caught up by then); bits: the heads' bits one after the other
            ws = self._ws
            ws[0] = v_e * supply
            ws[1] = w1 * supply
            ws[2] = omega * supply
            ws[3] = w3 * supply
            ws[4] = v_e
            ws[5] = w[5] * supply
            ws[6] = omega * (qc * (qc + 1.0) + 2.0 * a_hat)
            ws[7] = w[7] * (supply * (supply + 1.0))
            _dot(ws, unit_rows, out=obj_free)
        obj = self._obj
        k = int(obj.argmin())
        cut = self._cut_list[k]
        idle = v_e * self._idle_cost
        if mult:
            # the backlog term counts whole frames; a partly run front frame still waits a slot
            # if the GPU idles: its remaining part is charged omega*tau per frame
            idle += omega * tau * (qc - math.floor(qc + 1e-9))
        if supply > 0.0 and obj.item(k) < idle:
            level, process = self._level_list[k], True
            mu = mu_list[k]
            head_bits = self._bits_list[k]
            s_k = qc + (a_hat if mu >= lim else a_hat * mu / lim)
            made = (mu if mu < s_k else s_k) * head_bits
            self._last_run = (qc, self._head_list[k], mu)
            self._last_bits = head_bits
            if head_bits > 0.0:
                self._flow_bits = head_bits
        else:
            level, process, made = self._idle_level, False, 0.0
            self._last_run = None
            self._last_bits = 0.0
        # sending a bit a slot earlier saves omega*tau/B of latency
        w_r = w_bits + omega * tau / unit + z_l / self._dmax
        if cfg.uplink_age and qx > 0.5:
            # ... and the frames behind it have waited: the head-of-line age, a frame-second of
            # waiting weighing omega, spread over a frame's bits
            age = self._uplink_age(qx)
            self.uplink_age_s = age
            w_r += omega * age / self._flow_bits
        else:
            self.uplink_age_s = 0.0
            self._age_front = self._chunks  # an empty uplink: every bit made has left
        log2_k = shannon_log2_k(capacity, self.system.network.bandwidth_hz) if (self._shannon and capacity > 0.0) else 0.0
        bits = qx + made
        rate = self._rate(capacity, bits, v_e, w_r, log2_k)
        if rate > 0.0 and rate >= bits / tau and rate < capacity and cfg.rate_control:
            rate = self._fast_rate(capacity, bits, v_e, log2_k)
        if self._mult:
            # what the multiplier alone would send this slot (the LP's rate at price gamma_x)
            self._last_potential = self._rate(capacity, math.inf, 1.0, self._gx_fast, log2_k) * tau
        admit = True
        if cfg.admission_frame_value_j is not None:
            admit = qc < V * cfg.admission_frame_value_j
        self._last_queues = qc + qx
        return Decision(cut, level, rate, process, admit)

    def _uplink_age(self, qx: float) -> float:
        """Seconds the oldest bits on the uplink have waited since the slot their head finished
        in (0 for bits of the last slot): the bits sent so far are those made less ``qx``, and
        the front is the first chunk whose bits made exceed them (FIFO), read from a ring of
        :data:`AGE_RING_CHUNKS` chunks."""
        n = self._chunks
        sent = self._made_total - qx + 0.5
        ring = self._chunk_made
        mask = AGE_RING_CHUNKS - 1
        f = self._age_front
        if f < n - mask:
            f = n - mask
        while f < n and ring[f & mask] <= sent:
            f += 1
        self._age_front = f
        return (self._slots_seen - 1 - self._chunk_slot[f & mask]) * self._tau if f < n else 0.0

    def _fast_rate(self, capacity: float, bits: float, v_e: float, log2_k: float) -> float:
        """The rate, in [bits/tau, C], that sends all of ``bits`` this slot at the least
        ``v_e*bits*P(r)/r + omega*H/r``: energy against the frames' completion times, with
        ``H = bits*(m + 1)/2`` for the m = bits/D frames they hold (the k-th leaves at k*D/r).
        The capacity under the linear law (energy per bit falls with r) or at V_E = 0."""
        if v_e <= 0.0 or not self._shannon:
            return capacity
        c_w = self._omega * (bits / self._flow_bits + 1.0) / (2.0 * v_e)
        r = shannon_fast_rate(c_w, self.system.network, log2_k)
        lo = bits / self._tau
        return capacity if r >= capacity else (r if r > lo else lo)

    def _rate(self, capacity: float, bits: float, v_e: float, w_r: float, log2_k: float) -> float:
        """argmin over r in [0, min(C, bits/tau)] of v_e*P_tx(r) - w_r*r (closed form)."""
        r_max = bits / self._tau
        if r_max > capacity:
            r_max = capacity
        if r_max <= 0.0:
            return 0.0
        if not self.config.rate_control:
            return r_max
        net = self.system.network
        if w_r <= 0.0:
            return 0.0
        if v_e <= 0.0:
            return r_max
        if self._shannon:
            r = shannon_rate_bps(w_r, v_e, net, log2_k)
            return 0.0 if r <= 0.0 else (r if r < r_max else r_max)
        # linear: v_e*(alpha*r + beta) - w_r*r for r > 0, 0 at r = 0
        return r_max if linear_send_gain(w_r, v_e, net, r_max) > 0.0 else 0.0

    def observe(self, outcome: Outcome) -> None:
        # bits the slot's heads made, at the cut that ran (a live slot may have kept frames local
        # when the edge went down)
        cut = outcome.cut
        made = outcome.frames_done * (self._cut_bits[cut] if 0 <= cut < len(self._cut_bits) else self._last_bits)
        self._made_bits = made
        if made > 0.0:
            self._made_total += made
            k = self._chunks & (AGE_RING_CHUNKS - 1)
            self._chunk_made[k] = self._made_total
            self._chunk_slot[k] = self._slots_seen
            self._chunks += 1
        self._slots_seen += 1
        cfg = self.config
        if not cfg.virtual_queues:
            return
        tau = self._tau
        if cfg.energy_budget_w is not None:
            budget = cfg.energy_budget_w * tau
            z = self.z_energy + (outcome.energy_j - budget) / budget
            self.z_energy = z if z > 0.0 else 0.0
        if cfg.throughput_floor_fps is not None:
            z = self.z_throughput + cfg.throughput_floor_fps * tau - outcome.frames_done
            self.z_throughput = z if z > 0.0 else 0.0
        if cfg.latency_epsilon is not None:
            # each frame's service counted once: a head at cut p serves 1 - D(p)/D_max of its
            # frame, its D(p) bits the rest as they leave
            dmax = self._dmax
            served = outcome.frames_done * (1.0 - self._last_bits / dmax) + outcome.bits_sent / dmax
            z = self.z_latency + (cfg.latency_epsilon if self._last_queues > 0 else 0.0) - served
            self.z_latency = z if z > 0.0 else 0.0
