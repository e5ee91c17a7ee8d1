"""The hindsight bound curve E*(L): the least device energy per frame at mean latency <= L.

A policy that knows the whole trace (every slot's capacity C_t) and every arrival in advance
still has to run heads on the GPU, send bits through the link and wait for the edge. This module
writes those dynamics as one linear programme over the time-expanded queues (frames and bits per
slot), solved with cvxpy, and sweeps the latency budget L: E*(L) is a **certified lower bound**
on the energy per completed frame of every run of :func:`simulation.simulator.simulate` whose
mean latency is <= L and which completes at least ``serve_fraction`` of the arrived frames
(docs/hindsight.md has the same text with the measured figures).

Notation: slots t = 0..T-1 of length tau; A_t frames arrive in slot t; cuts p with head time
T(p, f), bits D(p) (D = 0: the result stays on the device), tail T_edge(p); powers P_busy(f),
P_idle(f).

The programme (N: frames served; every variable below is per frame, Charnes-Cooper)
--------------------------------------------------------------------------------------
Energy per frame and mean latency are ratios with the number N of completed frames in the
denominator. Dividing every variable by N (``s = 1/N``) makes both linear: a constant c in a
constraint becomes ``c*s`` and ``sum_t a_t = 1``. Variables, per slot t:

- ``a_t in [0, A_t*s]``: the frames of slot t that the run completes (any subset: drops,
  admission and frames left in flight at the end are all allowed);
- ``lam_{t,v} >= 0``: share of the slot at compute vertex v, ``sum_v lam_{t,v} <= s`` (the rest
  idles). Vertex v = (cut p, level f) running the whole slot: ``tau/T(p,f)`` heads for
  ``tau*P_busy(f)`` J; idle costs ``tau*e0``, ``e0 = min_f min(P_idle, P_busy)``. Per cut only the
  vertices on the lower convex hull of {(0, tau*e0)} and {(tau/T(p,f), tau*P_busy(f))} are kept;
- ``u_{t,p} >= 0``: heads completed at cut p (free at the input cut, which runs nothing);
- ``w_{t,p} >= 0``: head work done but not yet completed (partly run heads), with
  ``w_{t,p} <= w_{t-1,p} + sum_v lam_{t,v}*tau/T_v - u_{t,p}`` (work may be wasted), and
  ``sum_p w_{t,p} <= Qh_t``;
- ``Qh_t = Qh_{t-1} + a_t - sum_p u_{t,p} >= 0``: frames waiting for or in the head at the end of
  slot t (a frame may complete in the slot it arrives: in-slot service);
- ``b_{t,p} >= 0``: bits of cut-p frames sent in slot t, ``sum_p b_{t,p} <= C_t*tau*s``;
  ``X_{t,p} = X_{t-1,p} + D(p)*u_{t,p} - b_{t,p} >= 0`` (bits made in a slot may leave in it);
- ``Qh_{T-1} = 0``, ``X_{T-1,p} = 0``: every served frame is through the uplink by the end;
- ``e_t``: radio energy, ``e_t >= L_j(c_t)*s + nu_j*sum_p b_{t,p}`` for tangent prices nu_j (the
  tangent machinery of :mod:`simulation.bounds`: :func:`~simulation.bounds.radio_dual` per
  capacity state, each slot in the state of its capacity rounded *up* to the state's largest);
- ``q_t >= Qh_{t-1} - sum_p u_{t,p}`` and ``y_{t,p} >= (X_{t-1,p} - b_{t,p})/D(p)``, both >= 0.

Objective: ``T*tau*e0*s + sum_{t,v} lam_{t,v}*(E_v - tau*e0) + sum_t e_t`` (J per frame).
Latency, two constraints, each a lower bound on the mean latency:

- (area) ``tau*sum_t (q_t + sum_p y_{t,p}) + sum_p F(p)*sum_t u_{t,p} <= L``, with
  ``F(p) = RTT + T_edge(p) + result_bits/downlink`` for remote cuts, 0 for the local one;
- (floor) ``sum_p kappa(p)*sum_t u_{t,p} <= L``, ``kappa(p) = min_f T(p,f) + D(p)/max_t C_t + F(p)``.

L enters only the right-hand sides as a ``cp.Parameter``, so one compiled problem serves every L
(DPP; :class:`HindsightBound` checks ``is_dpp()``), and E*(L) is non-increasing in L because the
feasible set only grows with L.

Why it is a lower bound: every run maps to a feasible point with no more energy or latency
------------------------------------------------------------------------------------------
Take a run of the simulator, S the frames it completes (``result_s`` within the horizon),
N = |S| >= serve_fraction * arrivals. Put into the variables (times N, i.e. before dividing):

1. ``a_t`` = frames of S arriving in slot t (<= A_t).
2. Compute: in slot t the run spends busy time ``busy_t`` at its pair (p_t, f_t); the part of it
   spent on heads of S frames, b'_t <= busy_t, goes to vertex (p_t, f_t) with share b'_t/tau, the
   rest of the slot is idle. LP compute energy ``b'_t*P_busy + (tau - b'_t)*e0`` <= the run's
   ``busy_t*P_busy + (tau - busy_t)*P_idle`` (work on frames outside S and the switch time are
   dropped: both cost at least e0). A vertex off the lower hull is replaced by the mix of hull
   vertices of the same cut with the same heads and no more energy, which changes no other
   constraint (only heads per cut and energy enter). Clock switches cost nothing in the LP.
3. ``u_{t,p}`` = frames of S whose head completes in slot t at cut p; ``w_{t,p}`` = the work
   (in heads of cut p) done on S frames that have not completed by the end of slot t. At most
   the frames present hold partial work, each less than one head: ``sum_p w <= Qh``. ``Qh_t`` is
   then exactly the number of S frames arrived but not through the head at the end of slot t.
4. ``b_{t,p}`` = bits of cut-p S frames sent in slot t (<= the run's sent bits <= C_t*tau); the
   LP's radio energy is at most g_t(bits sent) (the least energy for those bits in that slot, below
   which every tangent lies, as in :mod:`simulation.bounds`), which is at most the run's.
   ``X_{t,p}`` = bits of cut-p S frames made but unsent at the end of slot t; every frame of S
   is sent by the horizon, so both queues end empty.
5. Latency: a frame's latency is ``(sent - arrival) + F(p)`` (the edge trip, exact). The time
   ``[arrival, sent)`` covers whole slots in which the frame waits for or runs its head (arrived
   before the slot, head not done by its end: counted by ``q_t``, which is <= that count because
   ``Qh_{t-1} - sum u_t`` is exactly it) or waits for the uplink (head done before the slot, last
   bit not sent by its end: each such frame holds at most D(p) of the cut-p bits that are older
   than the slot and unsent after it, so ``y_{t,p}`` <= their number). The two sets are disjoint
   per frame and slot, and partly covered slots count zero, so ``tau*sum(q + y)`` <= the total
   time frames spend in whole slots before being sent, and adding F(p) per frame stays <= the
   total latency. Separately each frame of cut p needs at least its fastest head, its bits at
   the best capacity and F(p): kappa(p). Both sums are <= N * (the run's mean latency) <= N*L.

Dividing by N gives a feasible point whose objective is <= the run's energy per completed frame,
hence E*(L) <= it. (The run's own completions are integers at exact times; the LP only needs the
per-slot counts.) No order of service is used above, so the argument holds for FIFO and any
other discipline. One modelling fact it relies on: a head partly run at cut A and finished at cut
B has had at least B's work done on it. That holds when the simulator abandons it (at the input
cut) or when T(A, f) >= T(B, f) at the levels it ran (the slot's busy time is then put on vertex
(B, f) and yields at least the fraction; the excess is wasted work). The present simulator also
carries the *fraction* of a head to a deeper cut (T(A, f) < T(B, f)), which credits work never
done; such a run is outside the certificate (see docs/hindsight.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from controller.model import SystemModel
from simulation.bounds import capacity_states, radio_dual, radio_prices, solve_lp

DEFAULT_TANGENTS = 16
DEFAULT_STATES = 64
# Clarabel's interior point: 38 s per L at 6000 slots here, where HiGHS (simplex, or IPM without
# crossover) took several minutes on the same problem (docs/hindsight.md)
DEFAULT_SOLVER = "CLARABEL"
HIGHS_OPTIONS = {"solver": "ipm", "run_crossover": "off"}


@dataclass(frozen=True)
class HindsightPoint:
    """E*(L) at one latency budget: J per completed frame (NaN when no policy meets L)."""

    latency_s: float
    e_star_j_per_frame: float
    status: str
    solve_s: float

    @property
    def feasible(self) -> bool:
        return self.status in ("optimal", "optimal_inaccurate")


def compute_vertices(system: SystemModel) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The compute vertices kept in the LP: (cut, heads per slot, energy per slot in J) each, and
    the idle energy per slot ``tau*e0``.

    Per cut, a (cut, level) pair run for the whole slot is the point ``(tau/T, tau*P_busy)``; the
    slot idle is ``(0, tau*e0)``. Only the pairs on the lower convex hull of these points survive:
    any other point is a mix of hull points of the same cut with the same heads and no more energy.
    """
    tau = system.slot_s
    e0 = tau * float(min(np.min(system.idle_w), np.min(system.busy_w)))
    cuts, heads, energy = [], [], []
    for p in range(system.n_cuts):
        T = system.head_s[p]
        if not np.all(T > 0.0):
            continue  # the input cut: no head to run
        pts = sorted({(tau / float(T[f]), tau * float(system.busy_w[f])) for f in range(system.n_levels)})
        hull = [(0.0, e0)]
        for pt in pts:
            while len(hull) >= 2:
                (x1, y1), (x2, y2) = hull[-2], hull[-1]
                if (x2 - x1) * (pt[1] - y1) - (y2 - y1) * (pt[0] - x1) <= 0.0:
                    hull.pop()  # hull[-1] is on or above the segment hull[-2] -> pt
                else:
                    break
            hull.append(pt)
        for x, y in hull[1:]:
            cuts.append(p)
            heads.append(x)
            energy.append(y)
    return np.array(cuts, dtype=int), np.array(heads), np.array(energy), e0


def _radio_tangents(system: SystemModel, capacity_bps: np.ndarray, tangents: int, states: int) -> tuple[np.ndarray, np.ndarray]:
    """Per slot, the tangent lines of its radio cost ``e >= ell + nu*b`` (arrays (T, J)).

    Slots are grouped into ``states`` quantile bins of capacity, each at the bin's largest
    capacity (sending is never dearer on a faster link, so the lines stay below every slot's cost).
    """
    cap = np.asarray(capacity_bps, dtype=float)
    _, levels = capacity_states(cap, bins=states)
    levels = np.unique(levels[levels > 0.0])
    if len(levels) == 0:
        return np.zeros((len(cap), 1)), np.zeros((len(cap), 1))
    state = np.minimum(np.searchsorted(levels, cap, side="left"), len(levels) - 1)
    ell = np.zeros((len(levels), tangents))
    nus = np.zeros((len(levels), tangents))
    for i, c in enumerate(levels):
        nus[i] = radio_prices(system, np.array([c]), tangents)
        ell[i] = [radio_dual(system, np.ones(1), np.array([c]), float(nu))[0] for nu in nus[i]]
    return ell[state], nus[state]


class HindsightBound:
    """The LP of the module docstring for one trace and one set of arrivals, compiled once; call
    :meth:`solve` for each latency budget.

    ``serve_fraction``: the runs bounded are those completing at least this share of the
    arrived frames (the LP may leave the rest unserved). ``tangents`` lines per capacity state,
    ``states`` capacity states (quantile bins, each at its largest capacity).
    """

    def __init__(
        self,
        system: SystemModel,
        capacity_bps: np.ndarray,
        arrival_times_s: np.ndarray,
        *,
        serve_fraction: float = 0.99,
        tangents: int = DEFAULT_TANGENTS,
        states: int = DEFAULT_STATES,
    ):
        import cvxpy as cp

        cap = np.asarray(capacity_bps, dtype=float)
        if cap.ndim != 1 or len(cap) == 0:
            raise ValueError(f"capacity_bps must be a non-empty 1-d array, got shape {cap.shape}")
        if not np.all(np.isfinite(cap)) or np.any(cap < 0.0):
            raise ValueError("capacity_bps must be finite and >= 0")
        if not (0.0 < float(serve_fraction) <= 1.0):
            raise ValueError(f"serve_fraction must be in (0, 1], got {serve_fraction!r}")
        if int(tangents) < 2:
            raise ValueError(f"tangents must be >= 2, got {tangents!r}")
        if int(states) < 1:
            raise ValueError(f"states must be >= 1, got {states!r}")
        self.system = system
        tau = system.slot_s
        n = len(cap)
        horizon = n * tau
        arr = np.asarray(arrival_times_s, dtype=float)
        arr = arr[(arr >= 0.0) & (arr < horizon)]
        A = np.bincount(np.minimum((arr // tau).astype(np.int64), n - 1), minlength=n).astype(float)
        self.arrived = int(A.sum())
        if self.arrived == 0:
            raise ValueError("arrival_times_s: no frame arrives within the trace")
        self.n_slots = n
        self.serve_fraction = float(serve_fraction)

        vcut, vheads, venergy, e0 = compute_vertices(system)
        work_cuts = sorted(set(vcut.tolist()))
        remote = [p for p in range(system.n_cuts) if system.bits[p] > 0.0]
        P = system.n_cuts
        net = system.network
        fixed = np.array([net.rtt_s + system.tail_s[p] + system.result_bits / net.downlink_bps if system.bits[p] > 0.0 else 0.0
                          for p in range(P)])
        cmax = float(cap.max())
        tmin = system.head_s.min(axis=1)
        send = np.array([system.bits[p] / cmax if system.bits[p] > 0.0 else 0.0 for p in range(P)]) if cmax > 0 else np.where(
            system.bits > 0.0, np.inf, 0.0)
        kappa = tmin + send + fixed
        self.kappa_s = kappa
        # a cut whose frames can never reach the edge (no capacity at all) is left out
        usable = [p for p in range(P) if math.isfinite(kappa[p])]
        remote = [p for p in remote if p in usable]

        self.L = cp.Parameter(nonneg=True, name="latency_s")
        self.inv_nmin = cp.Parameter(nonneg=True, name="inv_min_frames")
        self.inv_nmin.value = 1.0 / max(self.serve_fraction * self.arrived, 1e-12)

        s = cp.Variable(nonneg=True, name="s")
        a = cp.Variable(n, nonneg=True, name="a")
        u = cp.Variable((n, P), nonneg=True, name="u")
        Qh = cp.Variable(n, nonneg=True, name="Qh")
        q = cp.Variable(n, nonneg=True, name="q")
        usum = cp.sum(u, axis=1)
        cons = [s <= self.inv_nmin, cp.sum(a) == 1.0, a <= A * s, Qh[0] == a[0] - usum[0],
                Qh[1:] == Qh[:-1] + a[1:] - usum[1:], Qh[n - 1] == 0.0, q[1:] >= Qh[:-1] - usum[1:]]
        for p in range(P):
            if p not in usable:
                cons.append(u[:, p] == 0.0)
        energy = n * e0 * s
        if len(vcut):
            lam = cp.Variable((n, len(vcut)), nonneg=True, name="lam")
            cons.append(cp.sum(lam, axis=1) <= s)
            energy = energy + cp.sum(lam @ (venergy - e0))
            w = cp.Variable((n, len(work_cuts)), nonneg=True, name="w")
            M = np.zeros((len(vcut), len(work_cuts)))
            for i, p in enumerate(vcut):
                M[i, work_cuts.index(p)] = vheads[i]
            h = lam @ M
            uw = u[:, work_cuts]
            cons += [w[0] <= h[0] - uw[0], w[1:] <= w[:-1] + h[1:] - uw[1:], cp.sum(w, axis=1) <= Qh]
        for p in range(P):  # a cut with a head but no vertex (never the case with T > 0) runs nothing
            if p not in work_cuts and np.all(system.head_s[p] > 0.0):
                cons.append(u[:, p] == 0.0)
        area = tau * cp.sum(q)
        if remote:
            R = len(remote)
            # bits in units of the largest frame (D_ref): keeps the LP's numbers near 1
            d_ref = float(system.bits.max())
            D = system.bits[remote].astype(float) / d_ref
            b = cp.Variable((n, R), nonneg=True, name="b")
            X = cp.Variable((n, R), nonneg=True, name="X")
            y = cp.Variable((n, R), nonneg=True, name="y")
            made = cp.multiply(u[:, remote], np.tile(D, (n, 1)))
            btot = cp.sum(b, axis=1)
            cons += [X[0] == made[0] - b[0], X[1:] == X[:-1] + made[1:] - b[1:], X[n - 1] == 0.0,
                     btot <= cap * (tau / d_ref) * s,
                     cp.multiply(y[1:], np.tile(D, (n - 1, 1))) >= X[:-1] - b[1:]]
            ell, nu = _radio_tangents(system, cap, int(tangents), int(states))
            J = ell.shape[1]
            e = cp.Variable(n, nonneg=True, name="e")
            idx = np.repeat(np.arange(n), J)
            cons.append(e[idx] >= ell.ravel() * s + cp.multiply(nu.ravel() * d_ref, btot[idx]))
            energy = energy + cp.sum(e)
            area = area + tau * cp.sum(y)
        served_per_cut = cp.sum(u, axis=0)
        finite_fixed = np.where(np.isfinite(fixed), fixed, 0.0)
        kappa_f = np.where(np.isfinite(kappa), kappa, 0.0)
        self.latency_area = area + finite_fixed @ served_per_cut
        self.latency_floor = kappa_f @ served_per_cut
        cons += [self.latency_area <= self.L, self.latency_floor <= self.L]
        self.problem = cp.Problem(cp.Minimize(energy), cons)
        if not self.problem.is_dpp():  # pragma: no cover - a modelling error, caught by tests
            raise RuntimeError("the hindsight bound must be DPP so it compiles once")
        self._cons = cons[:-2]
        self._energy = energy
        self.vertices = len(vcut)

    def _solve(self, problem, solver: str | None):
        return solve_lp(problem, solver, DEFAULT_SOLVER, highs_options=HIGHS_OPTIONS)

    def solve(self, latency_s: float, *, solver: str | None = None) -> HindsightPoint:
        """E*(``latency_s``) in J per completed frame; NaN with the solver's status when no
        policy meets the budget (below :meth:`least_latency_s`)."""
        import time

        L = float(latency_s)
        if not (math.isfinite(L) and L >= 0.0):
            raise ValueError(f"latency_s must be finite and >= 0, got {latency_s!r}")
        self.L.value = L
        t0 = time.perf_counter()
        value = self._solve(self.problem, solver)
        dt = time.perf_counter() - t0
        status = str(self.problem.status)
        ok = status in ("optimal", "optimal_inaccurate") and value is not None and math.isfinite(value)
        return HindsightPoint(L, float(value) if ok else math.nan, status, dt)

    def curve(self, latencies_s, *, solver: str | None = None) -> list[HindsightPoint]:
        """E*(L) for each L (one compiled problem; the values are non-increasing in L)."""
        return [self.solve(L, solver=solver) for L in latencies_s]

    def least_latency_s(self, *, solver: str | None = None) -> float:
        """The smallest L at which the LP is feasible (the least mean latency of a lower-bounding
        point); NaN when even that problem fails."""
        import cvxpy as cp

        t = cp.Variable(name="t")
        prob = cp.Problem(cp.Minimize(t), self._cons + [self.latency_area <= t, self.latency_floor <= t])
        value = self._solve(prob, solver)
        return float(value) if value is not None and math.isfinite(value) else math.nan


def latency_grid_s(lo_s: float, hi_s: float, n: int = 10) -> np.ndarray:
    """``n`` log-spaced latencies from ``lo_s`` to ``hi_s`` (s)."""
    if not (math.isfinite(lo_s) and math.isfinite(hi_s) and 0.0 < lo_s <= hi_s):
        raise ValueError(f"latency range must satisfy 0 < lo <= hi, got {lo_s!r}, {hi_s!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    return np.geomspace(lo_s, hi_s, int(n))


__all__ = ["HindsightBound", "HindsightPoint", "compute_vertices", "latency_grid_s"]
