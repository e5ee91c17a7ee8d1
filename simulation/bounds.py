"""The stationary LP bound p*: the least average device power any policy can have on a trace.

Drift-plus-penalty guarantees that the controller's time-average penalty is within O(1/V) of the
best *stationary randomised* policy's (M. J. Neely, "Stochastic Network Optimization with
Application to Communication and Queueing Systems", 2010, ch. 4). That optimum is a linear
programme over the link's states; this module solves it with cvxpy so a sweep can say how far
the controller is from it at each V.

The programme
-------------
Link states are the run's per-slot capacities C_t, each with probability 1/T (the finest binning
of the trace; ``bins=N`` groups them into N quantile bins, each at its **largest** capacity, a
coarser bound that is still valid). A stationary randomised policy picks, per state, a mix over
the (cut p, level f) pairs, heads to run, and a rate. Only the radio's cost depends on the
state, so the (p, f) mix needs no per-state copy: averaging a state-dependent mix over the states
changes no constraint and no cost. Variables:

- ``z[k] >= 0``: share of slots spent at pair k, ``sum z = 1``;
- ``m[k] >= 0``: heads run per slot at pair k, ``m <= mu_k * z`` (``mu_k = slot/T_loc(p, f)``;
  no limit at the input cut, which runs nothing);
- ``B >= 0``: bits sent per slot on average, at most the mean of ``C_t * slot``;
- ``e``: the radio's energy per slot.

Constraints: the device queue is stable (``sum m >= lambda * slot``, and ``>= lambda_min * slot``
with a throughput floor), the uplink queue is stable (``B >= sum m * D(p)``), and with an energy
budget the average power stays within it. Objective: the average power
``(sum z * slot * P_idle(f) + m * dE(p, f) + e) / slot`` in W (divided by the frame rate: J/frame).

The radio (rate per state)
--------------------------
The least radio energy for B bits per slot on average is
``R(B) = min (1/T) sum_t g_t(b_t)`` over ``0 <= b_t <= C_t*slot`` with ``(1/T) sum_t b_t = B``,
where ``g_t(b)`` is the least energy for b bits in one slot of capacity C_t: ``slot*P_tx(b/slot,
C_t)`` for the Shannon law (sending slowly over the whole slot is cheapest, as P_tx(r)/r grows
with r), ``b*(alpha + beta/C_t)`` for the linear one. R is convex; it enters the LP as a
**piecewise-linear outer approximation**: for prices nu_j >= 0 (J of them, geometric over the
range of marginal radio costs), ``e >= L(nu_j) + nu_j * B`` with the dual function
``L(nu) = (1/T) sum_t min_b (g_t(b) - nu*b)``, each minimum in closed form (water-filling: the
same formula as the controller's rate, :func:`~controller.lyapunov.shannon_rate_bps`, with price
nu). By weak duality every such line lies below R, so the LP never charges the radio more than
it must cost; the lines touch R at the water-filling solutions, so the approximation is tight
there.

Why p* is a lower bound (relaxation, not approximation)
------------------------------------------------------
Take any policy's run and put its slots into the variables: z for the pairs it chose, m for the
heads' progress it made (``busy / T_loc``), B for the bits it sent. That point satisfies every
constraint once the frames it served and the bits it left unsent are the demand
(:meth:`StationaryBound.solve_served`), and its LP cost is at most its real energy: the compute
energy is the same expression, R(B) is the least radio energy for those bits on those
capacities, the tangents lie below R, and clock switches, slot boundaries and queueing cost
nothing in the LP. Hence p* <= any policy's time-average power at the same served load. With the
full offered load as demand, p* is the constant the controller's energy approaches as V grows
(from above, while its queues still drain within the run).

DPP: the problem is built once per (system, J, constraint set) with ``cp.Parameter`` for all a
trace changes (the tangents, the demand, the link's volume), checked with ``is_dpp()``, and
re-solved by assigning values: one compiled problem serves every trace and window of a sweep.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from dataclasses import dataclass

import numpy as np

from controller.lyapunov import shannon_rate_bps
from controller.model import LN2, SystemModel

DEFAULT_TANGENTS = 64


@dataclass(frozen=True)
class BoundResult:
    """One solve: p* in W and per frame, the demand it was solved for, and the solver status."""

    p_star_w: float
    p_star_j_per_frame: float
    frames_per_slot: float
    status: str
    tangents: int
    mix: dict  # cut name -> share of heads in the optimal stationary policy
    radio_w: float  # the radio's share of p*

    @property
    def feasible(self) -> bool:
        return self.status in ("optimal", "optimal_inaccurate")


def capacity_states(capacity_bps: np.ndarray, bins: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(probability, capacity) of the link's states.

    ``bins=None``: every slot is a state (probability 1/T). Otherwise quantile bins holding
    equal numbers of slots, each at the largest capacity in it (so the bound stays valid: a
    higher capacity only makes sending cheaper); with fewer slots than bins the extra bins are
    empty.
    """
    c = np.asarray(capacity_bps, dtype=float)
    n = len(c)
    if n == 0:
        raise ValueError("no slots to bin")
    if bins is None:
        return np.full(n, 1.0 / n), c.copy()
    c = np.sort(c)
    edges = np.linspace(0, n, int(bins) + 1).round().astype(int)
    pi = np.diff(edges) / n
    cap = np.array([c[edges[i + 1] - 1] if edges[i + 1] > edges[i] else 0.0 for i in range(int(bins))])
    return pi, cap


def _log2_k(capacity_bps: np.ndarray, bandwidth_hz: float) -> np.ndarray:
    x = capacity_bps / bandwidth_hz
    with np.errstate(divide="ignore"):
        return np.where(x > 50.0, x + np.log2(-np.expm1(-np.maximum(x, 1e-300) * LN2)), np.log2(np.expm1(x * LN2)))


def slot_radio_energy_j(system: SystemModel, bits: np.ndarray, capacity_bps: np.ndarray) -> np.ndarray:
    """g(b): the least radio energy to send ``bits`` in one slot of ``capacity_bps`` (J)."""
    net = system.network
    tau = system.slot_s
    b = np.asarray(bits, dtype=float)
    c = np.asarray(capacity_bps, dtype=float)
    out = np.zeros(np.broadcast(b, c).shape)
    pos = np.broadcast_to(b > 0.0, out.shape)
    if net.model == "linear":
        with np.errstate(divide="ignore"):
            val = b * (net.alpha_w_per_bps + net.beta_w / c)
        return np.where(pos, val, 0.0)
    x = b / (tau * net.bandwidth_hz)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log2_num = np.where(x > 50.0, x + np.log2(-np.expm1(-np.maximum(x, 1e-300) * LN2)), np.log2(np.expm1(x * LN2)))
        val = tau * net.max_power_w * np.exp2(log2_num - _log2_k(c, net.bandwidth_hz))
    return np.where(pos, val, 0.0)


_HIGHS_STARTED = False


@contextlib.contextmanager
def _quiet_stdout():
    """Standard output (file descriptor 1) to /dev/null for the duration: HiGHS prints its banner
    from C when a process first creates a solver, whatever its options say. Errors still raise."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def solve_lp(problem, solver: str | None, default: str, *, highs_options: dict | None = None, **kw):
    """Solve a cvxpy ``problem`` with ``solver`` (a name the user asked for: it must be installed)
    or ``default`` (CLARABEL when that is not installed), falling back to CLARABEL when the solver
    fails. Shared by the stationary bound and the hindsight bound. The first HiGHS solve of a
    process runs with standard output muted (its banner, once per sweep worker)."""
    global _HIGHS_STARTED
    import cvxpy as cp

    installed = cp.installed_solvers()
    name = (solver or default).upper()
    if name not in installed:
        if solver:
            raise ValueError(f"solver {name!r} is not installed (installed: {', '.join(installed)})")
        name = "CLARABEL"
    options = {"highs_options": dict(highs_options)} if (name == "HIGHS" and highs_options) else {}
    try:
        if name == "HIGHS" and not _HIGHS_STARTED:
            _HIGHS_STARTED = True
            with _quiet_stdout():
                return problem.solve(solver=name, **options, **kw)
        return problem.solve(solver=name, **options, **kw)
    except cp.error.SolverError:
        if name == "CLARABEL":
            raise
        return problem.solve(solver="CLARABEL", **kw)


def radio_dual(system: SystemModel, prob: np.ndarray, capacity_bps: np.ndarray, nu: float) -> tuple[float, float]:
    """(L(nu), B(nu)): the dual function ``sum_s prob_s * min_b (g_s(b) - nu*b)`` and the mean
    bits of its minimiser (the water-filling answer at price ``nu`` J/bit)."""
    net = system.network
    tau = system.slot_s
    c = np.asarray(capacity_bps, dtype=float)
    bmax = c * tau
    live = c > 0.0
    if net.model == "linear":
        with np.errstate(divide="ignore"):
            slope = net.alpha_w_per_bps + net.beta_w / np.where(live, c, 1.0)
        b = np.where(live & (slope < nu), bmax, 0.0)
    else:
        log2_k = _log2_k(np.where(live, c, 1.0), net.bandwidth_hz)
        with np.errstate(divide="ignore"):
            r = shannon_rate_bps(nu, 1.0, net, log2_k, np.log2) if nu > 0.0 else np.full(c.shape, -np.inf)
        b = np.where(live, np.clip(r * tau, 0.0, bmax), 0.0)
    g = slot_radio_energy_j(system, b, np.where(live, c, 1.0))
    return float(np.sum(prob * (g - nu * b))), float(np.sum(prob * b))


def radio_prices(system: SystemModel, capacity_bps: np.ndarray, tangents: int) -> np.ndarray:
    """Prices nu (J/bit) for the tangents: 0 and a geometric grid over the marginal radio costs."""
    net = system.network
    c = np.asarray(capacity_bps, dtype=float)
    c = c[c > 0.0]
    if len(c) == 0 or tangents <= 1:
        return np.zeros(max(tangents, 1))
    if net.model == "linear":
        slopes = np.sort(net.alpha_w_per_bps + net.beta_w / c)
        q = np.quantile(slopes, np.linspace(0.0, 1.0, tangents - 1))
        return np.concatenate([[0.0], q * (1.0 + 1e-12)])
    W = net.bandwidth_hz
    lo = net.max_power_w * LN2 / W * np.exp2(-_log2_k(c, W)).min()  # marginal cost at b = 0, best slot
    hi = net.max_power_w * LN2 / W * np.exp2(c / W - _log2_k(c, W)).max()  # at full capacity, worst
    lo = max(lo, 1e-18)
    return np.concatenate([[0.0], np.geomspace(lo, max(hi, lo * 10), tangents - 1)])


class StationaryBound:
    """The LP of the module docstring for one system, compiled once, solved per trace.

    ``energy_budget_w`` and ``throughput_floor_fps`` are the controller's long-run constraints
    (the same values its virtual queues enforce); ``None`` leaves them out.
    """

    def __init__(
        self,
        system: SystemModel,
        *,
        tangents: int = DEFAULT_TANGENTS,
        bins: int | None = None,
        energy_budget_w: float | None = None,
        throughput_floor_fps: float | None = None,
    ):
        import cvxpy as cp

        if tangents < 2:
            raise ValueError("tangents must be >= 2")
        if bins is not None and bins < 1:
            raise ValueError("bins must be >= 1")
        self.system = system
        self.tangents = int(tangents)
        self.bins = bins
        self.energy_budget_w = energy_budget_w
        self.throughput_floor_fps = throughput_floor_fps
        tau = system.slot_s
        P, F = system.n_cuts, system.n_levels
        J, K = self.tangents, P * F
        self._pair_cut = np.repeat(np.arange(P), F)
        head = system.head_s.ravel()
        finite = head > 0.0
        mu = np.where(finite, tau / np.where(finite, head, 1.0), 0.0)
        dE = system.extra_energy_j().ravel()
        D = system.bits[self._pair_cut].astype(float)
        idle = tau * np.tile(system.idle_w, P)

        self.nu = cp.Parameter(J, nonneg=True, name="nu")  # J/bit
        self.dual = cp.Parameter(J, name="dual")  # L(nu_j), J per slot
        self.bmax = cp.Parameter(nonneg=True, name="bits_max")  # mean C_t * slot
        self.frames = cp.Parameter(nonneg=True, name="frames_per_slot")
        self.unsent = cp.Parameter(nonneg=True, name="unsent_bits_per_slot")

        z = cp.Variable(K, nonneg=True, name="z")
        m = cp.Variable(K, nonneg=True, name="m")
        B = cp.Variable(nonneg=True, name="B")
        e = cp.Variable(name="e")
        compute = idle @ z + dE @ m
        energy_slot = compute + e
        cons = [
            cp.sum(z) == 1.0,
            B <= self.bmax,
            e >= self.dual + cp.multiply(self.nu, B),
            cp.sum(m) >= self.frames,
            B >= D @ m - self.unsent,
        ]
        if finite.any():
            cons.append(m[finite] <= cp.multiply(mu[finite], z[finite]))
        if throughput_floor_fps is not None:
            cons.append(cp.sum(m) >= throughput_floor_fps * tau)
        if energy_budget_w is not None:
            cons.append(energy_slot <= energy_budget_w * tau)
        self._m, self._e = m, e
        self._link: np.ndarray | None = None
        self.problem = cp.Problem(cp.Minimize(energy_slot / tau), cons)
        if not self.problem.is_dpp():  # pragma: no cover - a modelling error, caught by tests
            raise RuntimeError("the stationary bound must be DPP so it compiles once")

    def _set_link(self, capacity_bps: np.ndarray) -> None:
        """Assign the link's parameters (the radio's tangents), unless this trace is already set:
        a sweep solves many demands on one trace and only the demand changes between them."""
        cap_in = np.asarray(capacity_bps, dtype=float)
        if self._link is not None and self._link.shape == cap_in.shape and np.array_equal(self._link, cap_in):
            return
        s = self.system
        prob, cap = capacity_states(cap_in, self.bins)
        nus = radio_prices(s, cap, self.tangents)
        self.nu.value = nus
        self.dual.value = np.array([radio_dual(s, prob, cap, float(nu))[0] for nu in nus])
        self.bmax.value = float(np.sum(prob * cap) * s.slot_s)
        self._link = cap_in.copy()

    def solve(
        self,
        capacity_bps: np.ndarray,
        arrival_rate_fps: float,
        *,
        frames_per_slot: float | None = None,
        unsent_bits_per_slot: float = 0.0,
        solver: str | None = None,
    ) -> BoundResult:
        """p* for a run whose slots have ``capacity_bps``.

        Demand: ``arrival_rate_fps * slot`` heads per slot (the offered load), or
        ``frames_per_slot`` when given (the load a policy actually served), with
        ``unsent_bits_per_slot`` of the produced bits allowed to stay queued.
        """

        s = self.system
        tau = s.slot_s
        self._set_link(capacity_bps)
        frames = arrival_rate_fps * tau if frames_per_slot is None else float(frames_per_slot)
        self.frames.value = max(frames, 0.0)
        self.unsent.value = max(float(unsent_bits_per_slot), 0.0)
        value = solve_lp(self.problem, solver, "HIGHS", warm_start=False)
        status = str(self.problem.status)
        p = float(value) if value is not None and math.isfinite(value) else math.nan
        mix: dict = {}
        radio = math.nan
        if self._m.value is not None and math.isfinite(p):
            heads = np.maximum(self._m.value, 0.0)
            total = heads.sum()
            per_cut = np.bincount(self._pair_cut, weights=heads, minlength=s.n_cuts)
            mix = {name: float(per_cut[i] / total) if total > 0 else 0.0 for i, name in enumerate(s.cut_names)}
            radio = float(self._e.value) / tau
        rate = frames / tau
        return BoundResult(
            p_star_w=p,
            p_star_j_per_frame=p / rate if rate > 0 else math.nan,
            frames_per_slot=frames,
            status=status,
            tangents=self.tangents,
            mix=mix,
            radio_w=radio,
        )

    def solve_served(self, result, capacity_bps: np.ndarray | None = None) -> BoundResult:
        """p* for the load a simulated run actually carried (see the module docstring).

        ``result`` is a :class:`~simulation.simulator.SimResult`. The heads' progress
        (``busy/T_loc``, or the heads done at the input cut) is the demand and the bits produced
        by that progress but not sent are allowed to stay queued, so the run itself is a
        feasible point of the LP: its average power is >= the returned p*.
        """
        s = self.system
        sl = result.slots
        cap = sl["capacity_bps"] if capacity_bps is None else capacity_bps
        progress = heads_progress(s, sl)
        n = len(cap)
        produced = float(np.sum(progress * s.bits[sl["cut"].astype(int)]))
        unsent = max(produced - float(np.sum(sl["sent_bits"])), 0.0)
        return self.solve(cap, 0.0, frames_per_slot=float(progress.sum()) / n, unsent_bits_per_slot=unsent / n)


def heads_progress(system: SystemModel, slots: dict) -> np.ndarray:
    """Heads' progress per slot: ``busy/T_loc(p, f)``, or the heads done at a zero-time cut."""
    cut = slots["cut"].astype(int)
    level = slots["level"].astype(int)
    T = system.head_s[cut, level]
    return np.where(T > 0.0, slots["busy_s"] / np.where(T > 0.0, T, 1.0), slots["heads_done"].astype(float))


__all__ = [
    "BoundResult",
    "StationaryBound",
    "capacity_states",
    "heads_progress",
    "radio_dual",
    "radio_prices",
    "slot_radio_energy_j",
]
