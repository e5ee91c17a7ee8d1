"""Baselines the controller is compared with, run by the same simulator on the same traces.

Every baseline is a :class:`~controller.policy.Policy`. Unless its docstring says otherwise a
baseline runs heads whenever frames wait, admits every frame, and sends whatever is queued as
fast as the link and the policy contract allow, ``r = min(C(t), Q_x/slot_s)``: it has no rate
control. (That rule sends the bits queued at the start of the slot over the whole slot, so a
small backlog goes at a lower rate, and bits a head makes during the slot wait for the next one;
under the Shannon power law this is the cheaper way to send it, under the linear law the radio
pays ``beta`` for longer. The controller may go faster and finish early: docs/controller.md.) Baselines that need the
link's capacity to choose a cut use an **estimate from past slots only** (:class:`CapacityEstimate`:
the harmonic mean of the last few slots' capacity, as Neurosurgeon's bandwidth monitor and
MPC-style bit-rate adaptation do); none of them reads the current or a future slot of the trace.
Two are "in hindsight" on purpose and say so: ``static-best`` and ``dvfs-only`` (its cut).

Names accepted by :func:`make_policy` and ``cutedge sweep --policies``:

============== ===================================================================================
cutedge        the Lyapunov controller (:class:`~controller.lyapunov.LyapunovController`)
cutedge-no-dvfs   the controller at the top GPU clock only (ablation: no DVFS)
cutedge-no-rate   the controller's cut and clock, uplink always at full capacity (ablation: no
                  rate control); ``fixed-rate`` is the same policy under the issue's name
cutedge-no-vq  the controller without virtual queues: configured long-run constraints (energy
               budget, throughput floor, latency) are ignored (ablation)
dvfs-only      cut fixed to the best static cut in hindsight, clock (and idling, rate) chosen by
               the controller
local          :class:`LocalOnly`: everything on the device at the top clock
edge           :class:`EdgeOnly`: the raw input is sent, everything runs on the edge
neurosurgeon   :class:`Neurosurgeon`: latency-minimising cut per slot at the top clock
energy-greedy  :class:`EnergyGreedy`: least energy per frame (cut, clock) per slot, queues ignored
static-best    :func:`static_best`: the best fixed (cut, clock) in hindsight that serves the load
jointdnn       :class:`JointDNN`: shortest path over the layer graph, energy + latency weights
============== ===================================================================================

Policies that never look at the queues (local, edge, Neurosurgeon, energy-greedy, JointDNN, any
fixed pair) can also give their whole decision sequence in advance from the capacities and
arrivals (:meth:`ScheduledPolicy.schedule`), which the batched engine
(:mod:`simulation.batchsim`) runs for many scenarios at once. ``schedule`` calls the same
``decide`` as the live policy, so the two cannot disagree.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from controller.lyapunov import LyapunovConfig, LyapunovController, bit_price_j_per_bit
from controller.model import SystemModel
from controller.policy import Decision, Observation, Outcome, Policy

V_POLICIES = ("cutedge", "cutedge-no-dvfs", "cutedge-no-rate", "cutedge-no-vq", "fixed-rate", "dvfs-only")
"""Policies with a V: each is the Lyapunov controller with a restriction; a sweep draws a curve."""

FIXED_POLICIES = ("local", "edge", "neurosurgeon", "energy-greedy", "static-best", "jointdnn")
"""Policies without a V: one point per trace and seed."""

POLICY_NAMES = V_POLICIES + FIXED_POLICIES

DEFAULT_ESTIMATE_WINDOW = 10
"""Slots in the harmonic-mean capacity estimate (1 s at 100 ms slots)."""


@dataclass(frozen=True)
class BaselineOptions:
    """Knobs of the baselines; defaults are the values the docs and the default sweep use."""

    estimate_window: int = DEFAULT_ESTIMATE_WINDOW
    arrival_ewma: float = 0.2
    jointdnn_latency_weight_j_per_s: float | None = None  # None: the board's idle power at f_max
    serve_fraction: float = 0.99  # static-best: completed >= this share of the arrived frames

    def __post_init__(self) -> None:
        if not (isinstance(self.estimate_window, int) and self.estimate_window >= 1):
            raise ValueError(f"estimate_window must be an integer >= 1, got {self.estimate_window!r}")
        if not 0.0 < self.arrival_ewma <= 1.0:
            raise ValueError(f"arrival_ewma must be in (0, 1], got {self.arrival_ewma!r}")
        w = self.jointdnn_latency_weight_j_per_s
        if w is not None and not (math.isfinite(w) and w >= 0.0):
            raise ValueError(f"jointdnn_latency_weight_j_per_s must be >= 0, got {w!r}")
        if not 0.0 < self.serve_fraction <= 1.0:
            raise ValueError(f"serve_fraction must be in (0, 1], got {self.serve_fraction!r}")


def parse_policies(text: str | Sequence[str]) -> list[str]:
    """``"cutedge,local"`` -> ``["cutedge", "local"]``; ``all`` expands; unknown names fail."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names: list[str] = []
    for raw in items:
        name = str(raw).strip()
        if not name:
            continue
        if name == "all":
            names += [n for n in POLICY_NAMES if n != "fixed-rate"]
            continue
        if name not in POLICY_NAMES:
            raise ValueError(f"unknown policy {name!r} (known: {', '.join(POLICY_NAMES)}, all)")
        names.append(name)
    if not names:
        raise ValueError("no policy given")
    return list(dict.fromkeys(names))


def full_rate(obs: Observation, slot_s: float) -> float:
    """Send whatever is queued, as fast as the link allows (no rate control)."""
    r = obs.queue_bits / slot_s
    return obs.capacity_bps if obs.capacity_bps < r else r


# -- bandwidth and load estimates (past slots only) -------------------------------------------


class CapacityEstimate:
    """Harmonic mean of the last ``window`` slots' capacity (bit/s), from past slots only.

    The harmonic mean is the estimator of Neurosurgeon's and MPC's bandwidth predictors: it is
    dominated by the slow samples, so it errs on the cautious side on a fading link. One slot at
    zero capacity in the window makes the estimate 0 (the link was just down). Before any slot
    was seen there is no estimate (``None``).
    """

    def __init__(self, window: int = DEFAULT_ESTIMATE_WINDOW):
        self.window = int(window)
        self.reset()

    def reset(self) -> None:
        self._past: deque[float] = deque(maxlen=self.window)

    def update(self, capacity_bps: float) -> None:
        self._past.append(float(capacity_bps))

    def value(self) -> float | None:
        if not self._past:
            return None
        if min(self._past) <= 0.0:
            return 0.0
        return len(self._past) / sum(1.0 / c for c in self._past)


# -- per-cut latency and energy at an estimated capacity --------------------------------------


def per_bit_energy_j(system: SystemModel, capacity_bps: float) -> float:
    """Radio energy per bit sent at full rate on a link of ``capacity_bps`` (inf if it is 0)."""
    if capacity_bps <= 0.0:
        return math.inf
    return float(bit_price_j_per_bit(system.network, capacity_bps))


def _transfer_s(bits: np.ndarray, capacity_bps: float) -> np.ndarray:
    """Seconds to send ``bits`` at ``capacity_bps``; 0 for nothing to send, inf on a dead link."""
    bits = np.asarray(bits, dtype=float)
    if capacity_bps <= 0.0:
        return np.where(bits > 0.0, math.inf, 0.0)
    return bits / capacity_bps


def cut_latency_s(system: SystemModel, capacity_bps: float, level: int) -> np.ndarray:
    """End-to-end latency of one frame at each cut, at GPU level ``level``, with no queueing (s).

    Head on the device, the cut's bits at ``capacity_bps``, half an RTT up, the tail on the edge,
    half an RTT and the result back; the last cut keeps everything on the device.
    """
    net = system.network
    head = system.head_s[:, level]
    remote = system.bits > 0.0
    back = net.rtt_s + system.result_bits / net.downlink_bps
    return head + np.where(remote, _transfer_s(system.bits, capacity_bps) + system.tail_s + back, 0.0)


def cut_energy_j(system: SystemModel, capacity_bps: float, level: int) -> np.ndarray:
    """Device energy of one frame at each cut: the head at busy power plus the radio (J)."""
    e_bit = per_bit_energy_j(system, capacity_bps)
    radio = np.where(system.bits > 0.0, system.bits * e_bit if math.isfinite(e_bit) else math.inf, 0.0)
    return system.head_s[:, level] * system.busy_w[level] + radio


# -- policies ---------------------------------------------------------------------------------


class ScheduledPolicy:
    """Base of the baselines that do not look at the queues.

    ``choose(t, arrivals)`` picks (cut, level) from what the policy has seen; ``decide`` adds
    the full-rate uplink and then records the slot's capacity and arrivals for later slots.
    """

    name = "scheduled"

    def __init__(self, system: SystemModel, options: BaselineOptions = BaselineOptions()):
        self.system = system
        self.options = options
        self.estimate = CapacityEstimate(options.estimate_window)
        self.reset()

    def reset(self) -> None:
        self.estimate.reset()
        self.arrivals_per_slot: float | None = None

    def choose(self, obs: Observation) -> tuple[int, int]:
        raise NotImplementedError

    def decide(self, obs: Observation) -> Decision:
        # the previous slot's arrivals are past information: fold them in before choosing
        if obs.t > 0:
            a = float(obs.arrivals)
            prev = self.arrivals_per_slot
            alpha = self.options.arrival_ewma
            self.arrivals_per_slot = a if prev is None else (1.0 - alpha) * prev + alpha * a
        cut, level = self.choose(obs)
        # only now is this slot's capacity known to the policy (as the slot's measured throughput)
        self.estimate.update(obs.capacity_bps)
        return Decision(cut, level, full_rate(obs, self.system.slot_s), True, True)

    def observe(self, outcome: Outcome) -> None:
        pass

    def schedule(self, capacity_bps: np.ndarray, arrivals_per_slot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cut[t], level[t]) for a whole run, from the same ``decide`` as the live policy.

        Valid because the choice never depends on the queues: only on past capacities and
        arrivals, which the trace fixes in advance.
        """
        n = len(capacity_bps)
        cuts = np.empty(n, np.int64)
        levels = np.empty(n, np.int64)
        self.reset()
        prev = 0
        for t in range(n):
            d = self.decide(Observation(t, 0.0, 0.0, float(capacity_bps[t]), prev))
            cuts[t], levels[t] = d.cut, d.level
            prev = int(arrivals_per_slot[t])
        self.reset()
        return cuts, levels


class FixedPolicy(ScheduledPolicy):
    """The same (cut, level) every slot; heads run whenever frames wait, full-rate uplink."""

    def __init__(self, system: SystemModel, cut: int, level: int, name: str | None = None):
        if not (0 <= cut < system.n_cuts and 0 <= level < system.n_levels):
            raise ValueError(f"cut {cut}, level {level} outside the tables ({system.n_cuts} cuts, {system.n_levels} levels)")
        self.cut, self.level = int(cut), int(level)
        self.name = name or f"fixed[{system.cut_names[cut]}@{system.levels_hz[level] / 1e6:.0f}MHz]"
        super().__init__(system)

    def choose(self, obs: Observation) -> tuple[int, int]:
        return self.cut, self.level


class LocalOnly(FixedPolicy):
    """Local-only: the whole model on the device at the highest GPU clock, nothing sent.

    The classic "no offloading" reference of every split-computing paper (e.g. Kang et al.,
    Neurosurgeon, ASPLOS 2017, "mobile-only"); here it runs at f_max as the stock governor
    would under load.
    """

    name = "local"

    def __init__(self, system: SystemModel, options: BaselineOptions = BaselineOptions()):
        super().__init__(system, system.local_cut, system.n_levels - 1, "local")


class EdgeOnly(FixedPolicy):
    """Edge-only: the raw input is sent (cut 0) and the whole model runs on the edge.

    The "cloud-only" reference of Kang et al. (Neurosurgeon, ASPLOS 2017). The GPU runs nothing,
    so it sits at the level with the least idle power (what an idle devfreq governor does);
    giving this baseline its best idle clock keeps the comparison about the split, not DVFS.
    """

    name = "edge"

    def __init__(self, system: SystemModel, options: BaselineOptions = BaselineOptions()):
        super().__init__(system, 0, int(np.argmin(system.idle_w)), "edge")


class Neurosurgeon(ScheduledPolicy):
    """Neurosurgeon: per slot, the cut with the least end-to-end latency for the estimated
    bandwidth, at the highest GPU clock (Y. Kang et al., "Neurosurgeon: Collaborative
    Intelligence Between the Cloud and Mobile Edge", ASPLOS 2017).

    Adaptation: Neurosurgeon predicts per-layer latency from regression models and picks the
    partition minimising mobile + upload + cloud latency for the current bandwidth; here the
    per-cut times come from the same profile the controller uses (:func:`cut_latency_s`) and
    the bandwidth is the harmonic mean of the last slots (:class:`CapacityEstimate`), never the
    current slot's true capacity. It has no DVFS (f_max) and no rate control (full rate). With
    no estimate yet (the first slot) it treats the link as down and runs locally.
    """

    name = "neurosurgeon"

    def choose(self, obs: Observation) -> tuple[int, int]:
        est = self.estimate.value()
        level = self.system.n_levels - 1
        lat = cut_latency_s(self.system, 0.0 if est is None else est, level)
        return int(np.argmin(lat)), level


class EnergyGreedy(ScheduledPolicy):
    """Energy-greedy: per slot the (cut, clock) with the least device energy per frame for the
    estimated bandwidth and frame rate, ignoring the queues.

    The myopic energy-minimising offloader of the MAUI/CloneCloud line (E. Cuervo et al., "MAUI:
    Making Smartphones Last Longer with Code Offload", MobiSys 2010), extended to the GPU clock.
    Energy per frame at (p, f) is the board's energy over one frame period P = 1/lambda:
    ``T(p,f)*P_busy(f) + max(P - T(p,f), 0)*P_idle(f) + D(p)*e_bit(C_est)``, with ``e_bit`` the
    radio energy per bit at full rate (:func:`per_bit_energy_j`), C_est the harmonic-mean
    estimate and lambda an EWMA of past arrivals (before any arrival is seen, P = 0). It does not
    ask whether the clock keeps up with the camera or the link with the bits: that is the point
    of the comparison (what queue-awareness buys).
    """

    name = "energy-greedy"

    def choose(self, obs: Observation) -> tuple[int, int]:
        s = self.system
        est = self.estimate.value()
        a = self.arrivals_per_slot
        period = s.slot_s / a if (a is not None and a > 0.0) else 0.0
        e = energy_per_frame_table(s, 0.0 if est is None else est, period)
        k = int(np.argmin(e))
        return k // s.n_levels, k % s.n_levels


def energy_per_frame_table(system: SystemModel, capacity_bps: float, frame_period_s: float) -> np.ndarray:
    """EnergyGreedy's table: device energy over one frame period at every (cut, level), (P, F)."""
    head = system.head_s
    compute = head * system.busy_w[None, :] + np.maximum(frame_period_s - head, 0.0) * system.idle_w[None, :]
    e_bit = per_bit_energy_j(system, capacity_bps)
    radio = np.where(system.bits > 0.0, system.bits * e_bit if math.isfinite(e_bit) else math.inf, 0.0)
    return compute + radio[:, None]


@dataclass(frozen=True)
class JointPath:
    """A JointDNN assignment: where each block between consecutive cuts runs, and its cost."""

    sides: tuple[str, ...]  # "device" or "edge" for blocks 1..P-1 (block i lies between cuts i-1 and i)
    cost: float
    energy_j: float
    latency_s: float

    @property
    def transfers(self) -> int:
        sides = ("device", *self.sides)
        return sum(a != b for a, b in zip(sides, sides[1:]))

    @property
    def cut(self) -> int:
        """The cut of a one-transfer path: blocks before it on the device, after it on the edge."""
        for i, side in enumerate(self.sides):
            if side == "edge":
                return i
        return len(self.sides)


def jointdnn_path(
    system: SystemModel,
    capacity_bps: float,
    level: int,
    latency_weight_j_per_s: float,
    allow_return: bool = False,
) -> JointPath:
    """Shortest path over the layer graph (JointDNN, Eshratifar et al., IEEE TMC 2019).

    Nodes are (block, side); running block i on the device costs its head time at ``level``
    times P_busy (energy) and that time (latency); on the edge, its tail time (latency only: the
    device's energy is what counts). Moving from device to edge at cut i costs the bits D(i) at
    the estimated capacity plus half an RTT (energy: the radio's J/bit); moving back (only if
    ``allow_return``) costs the same bits on the downlink; ending on the edge adds the result's
    trip back. Edge weights are ``energy + latency_weight * latency``; a dynamic programme over
    the chain is the shortest path of this DAG. Without ``allow_return`` (our edge agent returns
    only results), a path has at most one transfer and is exactly a cut choice.
    """
    s = system
    P = s.n_cuts
    net = s.network
    beta = float(latency_weight_j_per_s)
    head = s.head_s[:, level]
    e_bit = per_bit_energy_j(s, capacity_bps)
    inf = math.inf

    def up(i: int) -> tuple[float, float]:  # (energy, latency) of sending the tensor at cut i
        b = float(s.bits[i])
        if b <= 0.0:
            return 0.0, 0.0
        if not math.isfinite(e_bit):
            return inf, inf
        return b * e_bit, b / capacity_bps + net.rtt_s / 2

    def down(i: int) -> tuple[float, float]:
        b = float(s.bits[i])
        return 0.0, b / net.downlink_bps + net.rtt_s / 2

    def w(e: float, lat: float) -> float:
        return e + beta * lat if math.isfinite(e) and math.isfinite(lat) else inf

    # best (cost, energy, latency, path) ending each side after boundary i
    e0, l0 = up(0)
    dev = (0.0, 0.0, 0.0, ())
    edge = (w(e0, l0), e0, l0, ()) if math.isfinite(w(e0, l0)) else (inf, inf, inf, ())
    for i in range(1, P):
        t_dev = float(head[i] - head[i - 1])
        t_edge = float(s.tail_s[i - 1] - s.tail_s[i])
        e_d = t_dev * float(s.busy_w[level])
        dev_a = (dev[0] + w(e_d, t_dev), dev[1] + e_d, dev[2] + t_dev, (*dev[3], "device"))
        edge_a = (edge[0] + w(0.0, t_edge), edge[1], edge[2] + t_edge, (*edge[3], "edge"))
        if i == P - 1:  # the result: nothing to switch after the last block
            dev, edge = dev_a, edge_a
            break
        eu, lu = up(i)
        to_edge = (dev_a[0] + w(eu, lu), dev_a[1] + eu, dev_a[2] + lu, dev_a[3])
        edge = edge_a if edge_a[0] <= to_edge[0] else to_edge
        if allow_return:
            ed, ld = down(i)
            to_dev = (edge_a[0] + w(ed, ld), edge_a[1] + ed, edge_a[2] + ld, edge_a[3])
            dev = dev_a if dev_a[0] <= to_dev[0] else to_dev
        else:
            dev = dev_a
    back = s.result_trip_s
    edge_end = (edge[0] + w(0.0, back), edge[1], edge[2] + back, edge[3])
    best = dev if dev[0] <= edge_end[0] else edge_end
    return JointPath(sides=best[3], cost=best[0], energy_j=best[1], latency_s=best[2])


class JointDNN(ScheduledPolicy):
    """JointDNN: per slot, the layer assignment with the least ``energy + beta*latency`` for the
    estimated bandwidth (A. E. Eshratifar, M. S. Abrishami, M. Pedram, "JointDNN: An Efficient
    Training and Inference Engine for Intelligent Mobile Cloud Computing Services", IEEE TMC
    2019; the issue cites Eshratifar, Balasubramaniam, Pedram).

    Adaptation: JointDNN casts layer placement as a shortest path over a graph with one node per
    (layer, mobile|cloud) and edge weights from profiled latency and mobile energy, with several
    transfers allowed. Here the blocks are the segments between the profile's offered cuts, the
    weights are :func:`jointdnn_path`'s (head at f_max, radio J/bit at the harmonic-mean
    estimate), and ``beta`` (J/s) defaults to the board's idle power at f_max (a second of
    waiting costs what the board draws meanwhile). Our edge agent returns only results, so the
    graph has no edge-to-device transfer and the path is one cut. No DVFS, full-rate uplink.
    """

    name = "jointdnn"

    def __init__(self, system: SystemModel, options: BaselineOptions = BaselineOptions()):
        super().__init__(system, options)
        w = options.jointdnn_latency_weight_j_per_s
        self.latency_weight = float(system.idle_w[-1]) if w is None else float(w)

    def choose(self, obs: Observation) -> tuple[int, int]:
        est = self.estimate.value()
        level = self.system.n_levels - 1
        path = jointdnn_path(self.system, 0.0 if est is None else est, level, self.latency_weight)
        return path.cut, level


# -- static best in hindsight -----------------------------------------------------------------


@dataclass(frozen=True)
class StaticChoice:
    """The best fixed (cut, level) for one trace, and how every candidate did."""

    cut: int
    level: int
    serves: bool  # False: no fixed pair served the load; the one serving the most was taken
    table: list[dict]  # one row per candidate: cut, level, energy_per_frame_j, completed, ...
    result: object  # the SimResult of the chosen pair


def static_best(
    system: SystemModel,
    capacity_bps: np.ndarray,
    arrival_times_s: np.ndarray,
    *,
    buffer_frames: int = 1000,
    serve_fraction: float = BaselineOptions.serve_fraction,
) -> StaticChoice:
    """Best fixed (cut, level) in hindsight: simulate every pair on this trace (full-rate uplink)
    and take the least energy per frame among those that serve the offered load (no frame
    dropped and at least ``serve_fraction`` of the arrived frames completed by the end).

    This is an oracle (it has seen the whole trace) and a strong reference: it shows what the
    controller's adaptivity buys over the best single configuration one could have picked.
    """
    from simulation.batchsim import Lane, Schedule, simulate_batch

    n = len(capacity_bps)
    lanes = []
    pairs = [(p, f) for p in range(system.n_cuts) for f in range(system.n_levels)]
    for p, f in pairs:
        sched = Schedule(f"fixed-{p}-{f}", np.full(n, p), np.full(n, f))
        lanes.append(Lane(sched.name, sched, capacity_bps, arrival_times_s))
    results = simulate_batch(system, lanes, buffer_frames=buffer_frames)
    table = []
    for (p, f), r in zip(pairs, results):
        fr = r.summary["frames"]
        serves = fr["dropped"] == 0 and fr["completed"] >= serve_fraction * fr["arrived"]
        table.append(
            {
                "cut": p,
                "level": f,
                "serves": bool(serves),
                "completed": fr["completed"],
                "energy_per_frame_j": r.summary["energy_per_frame_j"],
                "avg_power_w": r.summary["avg_power_w"],
            }
        )
    ok = [i for i, row in enumerate(table) if row["serves"]]
    if ok:
        best = min(ok, key=lambda i: (table[i]["energy_per_frame_j"], i))
    else:  # nobody serves the load: take the pair that completes most, then the cheapest
        best = min(range(len(table)), key=lambda i: (-table[i]["completed"], _nan_last(table[i]["energy_per_frame_j"]), i))
    p, f = pairs[best]
    return StaticChoice(cut=p, level=f, serves=bool(ok), table=table, result=results[best])


def _nan_last(x: float) -> float:
    return math.inf if not math.isfinite(x) else x


# -- the registry -----------------------------------------------------------------------------


def controller_config(name: str, base: LyapunovConfig, V: float, static_cut: int | None = None) -> LyapunovConfig:
    """The LyapunovConfig of a V policy (``cutedge`` and its restrictions) at this V.

    ``dvfs-only`` is the DVFS half of the problem alone: the cut is fixed to the best static cut
    in hindsight (``static_cut``, from :func:`static_best` on the same trace) and the controller
    keeps choosing the clock, when to idle and the rate, as in DVFS-only schemes that leave the
    partition to an offline choice. The ablations switch one mechanism off each:
    ``cutedge-no-dvfs`` (top clock only), ``cutedge-no-rate`` / ``fixed-rate`` (send at
    ``min(C, Q_x/slot)``), ``cutedge-no-vq`` (no virtual queues: constraints ignored).
    """
    cfg = replace(base, V=float(V))
    if name == "cutedge":
        return cfg
    if name == "cutedge-no-dvfs":
        return replace(cfg, dvfs=False, fixed_level=None)
    if name in ("cutedge-no-rate", "fixed-rate"):
        return replace(cfg, rate_control=False)
    if name == "cutedge-no-vq":
        return replace(cfg, virtual_queues=False)
    if name == "dvfs-only":
        if static_cut is None:
            raise ValueError("dvfs-only needs the best static cut (static_best() on the trace)")
        return replace(cfg, fixed_cut=int(static_cut), fixed_level=None, dvfs=True)
    raise ValueError(f"{name!r} is not a V policy (known: {', '.join(V_POLICIES)})")


_SCHEDULED = {"local": LocalOnly, "edge": EdgeOnly, "neurosurgeon": Neurosurgeon, "energy-greedy": EnergyGreedy, "jointdnn": JointDNN}


def make_policy(
    name: str,
    system: SystemModel,
    *,
    V: float | None = None,
    base: LyapunovConfig | None = None,
    options: BaselineOptions = BaselineOptions(),
    static: StaticChoice | None = None,
) -> Policy:
    """A policy object by name (see the module docstring). V policies need ``V``; ``static-best``
    and ``dvfs-only`` need ``static`` (:func:`static_best` on the trace they will run on)."""
    if name in V_POLICIES:
        if V is None:
            raise ValueError(f"policy {name!r} needs a V")
        cfg = controller_config(name, base or LyapunovConfig(), V, None if static is None else static.cut)
        ctl = LyapunovController(system, cfg)
        ctl.name = name
        return ctl
    if name in _SCHEDULED:
        return _SCHEDULED[name](system, options)
    if name == "static-best":
        if static is None:
            raise ValueError("static-best needs static_best() on the trace it will run on")
        return FixedPolicy(system, static.cut, static.level, "static-best")
    raise ValueError(f"unknown policy {name!r} (known: {', '.join(POLICY_NAMES)})")


__all__ = [
    "FIXED_POLICIES",
    "POLICY_NAMES",
    "V_POLICIES",
    "BaselineOptions",
    "CapacityEstimate",
    "EdgeOnly",
    "EnergyGreedy",
    "FixedPolicy",
    "JointDNN",
    "JointPath",
    "LocalOnly",
    "Neurosurgeon",
    "ScheduledPolicy",
    "StaticChoice",
    "controller_config",
    "cut_energy_j",
    "cut_latency_s",
    "energy_per_frame_table",
    "jointdnn_path",
    "make_policy",
    "parse_policies",
    "static_best",
]
