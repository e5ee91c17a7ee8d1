"""A shared edge: many devices' tails on one finite, batching edge server.

With one device the edge is never a bottleneck (``simulation.simulator``: a tail takes the model
profile's ``tail_s`` the moment the last bit is in). With ``devices: N`` the N devices of a run
share one edge whose capacity comes from an **edge profile** (``configs/edges/*.yaml``)::

    name: agx-orin-fp32
    device: Jetson AGX Orin 64 GB as the edge server, PyTorch FP32, MAXN
    source: modelled: ...           # where the figures come from (free text)
    servers: 1                      # tails that run at once (GPUs, or streams that do not share)
    max_batch: 32                   # most requests of one (model, cut) in one tail call
    batch_overhead_s: 0.002         # fixed cost of one tail call (launch, copies, framework)
    batch_sizes: [1, 2, 4, 8, 16, 32]
    flops_per_s: [0.8e12, 1.2e12, 1.7e12, 2.1e12, 2.4e12, 2.5e12]   # effective FLOP/s at each size
    target_utilisation: 0.9         # optional: the load the broadcast price defends (rule 4)

A batch of ``b`` tails at cut p costs ``batch_overhead_s + b * tail_flops(p) / F(b)`` seconds
(:meth:`EdgeProfile.batch_s`), with ``F`` interpolated log-log between the listed sizes: the
profile says what a batch of b costs, the model profile how much work a tail is.

The edge, per slot t (the same rules in :func:`simulation.batchsim.simulate_batch`'s loop and in
the per-frame rebuild :func:`edge_completion_times`):

1. a request reaches the edge's queue in the slot its last bit leaves the device (it is there
   ``rtt/2`` later, which only delays its own completion);
2. the slot's requests of each cut are batched together across devices: ``n`` of them make
   ``ceil(n / max_batch)`` batches of near-equal size (the edge waits for no more than a slot);
3. the edge is a fluid FIFO server of work at ``servers`` seconds per second: its backlog
   ``W(t+1) = max(W(t) + w(t) - servers*tau, 0)`` with ``w(t)`` the work of the slot's batches;
   a batch completes when the served work reaches the work queued up to it, and never before its
   last request is there plus its own run time;
4. at the start of each slot every device is told ``max(W(t), W_v(t)/rho) / servers``
   (:attr:`controller.policy.Observation.edge_wait_s`), the price the edge broadcasts: the work
   ahead of a new request, or, when larger, that of a virtual server at ``rho =
   target_utilisation`` of the edge's speed, ``W_v(t+1) = max(W_v(t) + w(t) - rho*servers*tau, 0)``,
   so the price rises as soon as the load passes rho, before a real queue forms.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from controller.config import load_yaml, resolve_named
from controller.model import SystemModel

DEFAULT_EDGE = "agx-orin-fp32"


@dataclass(frozen=True)
class EdgeProfile:
    """What a shared edge can serve (module docstring)."""

    name: str
    device: str
    source: str
    servers: int
    max_batch: int
    batch_overhead_s: float
    batch_sizes: tuple[int, ...]
    flops_per_s: tuple[float, ...]
    target_utilisation: float = 0.9
    path: str = "built-in"

    def flops_at(self, b) -> np.ndarray:
        """Effective FLOP/s at batch size ``b`` (log-log interpolation between listed sizes)."""
        x = np.log(np.asarray(b, dtype=float))
        return np.exp(np.interp(x, np.log(self.batch_sizes), np.log(self.flops_per_s)))

    def batch_s(self, tail_flops, b) -> np.ndarray:
        """Seconds one tail call of ``b`` requests takes, each ``tail_flops`` of work (0 at b = 0)."""
        b = np.asarray(b, dtype=float)
        f = np.asarray(tail_flops, dtype=float)
        safe = np.where(b > 0, b, 1.0)
        return np.where(b > 0, self.batch_overhead_s + safe * f / self.flops_at(safe), 0.0)

    def frames_per_s(self, tail_flops: float) -> float:
        """The most tails of ``tail_flops`` per second (full batches on every server)."""
        return self.servers * self.max_batch / float(self.batch_s(tail_flops, self.max_batch))


def load_edge(name_or_path: str | os.PathLike[str]) -> EdgeProfile:
    """Load and check an edge profile (a ``configs/edges`` name or a path); errors name the field."""
    p = resolve_named("edges", str(name_or_path))
    s = load_yaml(p)
    s.check_keys(["name", "device", "source", "servers", "max_batch", "batch_overhead_s", "batch_sizes", "flops_per_s",
                  "target_utilisation"])
    sizes = s.numbers("batch_sizes", positive=True, ascending=True)
    if any(not float(v).is_integer() for v in sizes):
        raise s.error("batch_sizes", f"batch sizes must be whole numbers, got {sizes}")
    if sizes[0] != 1:
        raise s.error("batch_sizes", f"must start at 1 (the cost of a lone request), got {sizes[0]:g}")
    flops = s.numbers("flops_per_s", positive=True)
    if len(flops) != len(sizes):
        raise s.error("flops_per_s", f"has {len(flops)} values for {len(sizes)} batch_sizes")
    max_batch = s.integer("max_batch", min=1)
    if max_batch > sizes[-1]:
        raise s.error("max_batch", f"{max_batch} is above the largest listed batch size {sizes[-1]:g}")
    prof = EdgeProfile(
        name=s.string("name", p.stem),
        device=s.string("device"),
        source=s.string("source"),
        servers=s.integer("servers", 1, min=1),
        max_batch=max_batch,
        batch_overhead_s=s.number("batch_overhead_s", min=0.0),
        batch_sizes=tuple(int(v) for v in sizes),
        flops_per_s=tuple(flops),
        target_utilisation=s.number("target_utilisation", 0.9, positive=True, max=1.0),
        path=str(p),
    )
    per_request = prof.batch_s(1e9, np.asarray(prof.batch_sizes)) / np.asarray(prof.batch_sizes)
    if np.any(np.diff(per_request) > 1e-12):
        worse = int(np.flatnonzero(np.diff(per_request) > 1e-12)[0]) + 1
        raise s.error("flops_per_s", f"a batch of {prof.batch_sizes[worse]} costs more per request than one of "
                      f"{prof.batch_sizes[worse - 1]} (FLOP/s must not fall with the batch size)")
    return prof


def tail_flops(system: SystemModel) -> np.ndarray:
    """FLOPs of each offered cut's tail (0 at the local cut)."""
    return np.array([c.tail_flops for c in system.model.offered], dtype=float)


def batch_table(edge: EdgeProfile, system: SystemModel) -> np.ndarray:
    """``table[p, b]``: seconds of a batch of b requests at cut p, b = 0..max_batch + 1 (the last
    column repeats max_batch: the near-equal split weighs ``q + 1`` only while ``q < max_batch``)."""
    b = np.minimum(np.arange(edge.max_batch + 2), edge.max_batch)
    return edge.batch_s(tail_flops(system)[:, None], b[None, :])


def split_batches(n, max_batch: int):
    """``n`` requests in ``ceil(n/max_batch)`` batches of near-equal size: (batches, q, r) with
    ``r`` batches of ``q + 1`` and the rest of ``q``."""
    n = np.asarray(n)
    nb = -(-n // max_batch)
    q = n // np.where(nb > 0, nb, 1)
    r = n - q * nb
    return nb, q, r


def slot_work(table: np.ndarray, counts: np.ndarray, max_batch: int) -> np.ndarray:
    """Seconds of edge work of a slot's requests, ``counts[..., p]`` per cut, summed over cuts."""
    nb, q, r = split_batches(counts, max_batch)
    P = table.shape[0]
    cuts = np.arange(P)
    return ((nb - r) * table[cuts, q] + r * table[cuts, np.minimum(q + 1, table.shape[1] - 1)]).sum(axis=-1)


@dataclass
class EdgeJobs:
    """The requests one shared edge got, one row each, in the edge's FIFO order."""

    lane: np.ndarray      # which device sent it (its index in ``frames``)
    frame: np.ndarray     # the frame's index in that lane's arrivals
    slot: np.ndarray      # the slot its last bit left in (its batch's slot)
    cut: np.ndarray
    ready_s: np.ndarray   # when it is at the edge (last bit + rtt/2)
    done_s: np.ndarray    # when its batch completes (nan: not by the end of the run)
    batch: np.ndarray     # its batch's number in the FIFO, 0..


def edge_completion_times(edge: EdgeProfile, table: np.ndarray, bits: np.ndarray, tau: float, served: np.ndarray,
                          frames: list[dict], delivered: list[np.ndarray], rtt_s: float) -> EdgeJobs:
    """Each request's completion on the shared edge, rebuilt after the run (module docstring).

    ``frames[i]`` is device i's per-frame dict (``simulator.frame_times``: ``cut``,
    ``sent_s``, ``head_done_s``) and ``delivered[i][t]`` how many of its requests reached the
    edge in slot t, as the run's loop counted them: the k-th request of a lane is its k-th remote
    frame in FIFO order (the uplink is FIFO), so the slot a request was batched in is the loop's,
    exactly. ``served[t]``: seconds of work the edge did in slot t.
    """
    from simulation.dynamics import sent_times

    n_slots = len(served)
    cols = {k: [] for k in ("lane", "frame", "slot", "cut", "ready")}
    for lane, (fr, dl) in enumerate(zip(frames, delivered)):
        head = fr["head_done_s"]
        remote = np.isfinite(head) & (bits[np.maximum(fr["cut"], 0)] > 0.0)
        idx = np.flatnonzero(remote)
        idx = idx[np.argsort(head[idx], kind="stable")]  # FIFO: the order heads put bits on the uplink
        n = int(dl.sum())
        if n > len(idx):  # pragma: no cover - the loop counts only frames the uplink held
            raise RuntimeError(f"lane {lane}: the edge got {n} requests from {len(idx)} remote frames")
        idx = idx[:n]
        slot = np.repeat(np.arange(n_slots), dl)
        sent = fr["sent_s"][idx]
        sent = np.where(np.isfinite(sent), sent, (slot + 1) * tau)
        cols["lane"].append(np.full(n, lane))
        cols["frame"].append(idx)
        cols["slot"].append(slot)
        cols["cut"].append(fr["cut"][idx])
        cols["ready"].append(np.clip(sent, slot * tau, (slot + 1) * tau) + rtt_s / 2)
    lane_a, frame_a, slot_a, cut_a, ready_a = (np.concatenate(cols[k]) if cols[k] else np.zeros(0)
                                               for k in ("lane", "frame", "slot", "cut", "ready"))
    slot_a = slot_a.astype(np.int64)
    cut_a = cut_a.astype(np.int64)
    order = np.lexsort((ready_a, cut_a, slot_a))
    lane_a, frame_a, slot_a, cut_a, ready_a = (x[order] for x in (lane_a, frame_a, slot_a, cut_a, ready_a))
    m = len(order)
    done = np.full(m, np.nan)
    batch_of = np.zeros(m, np.int64)
    if m:
        # (slot, cut) groups, then near-equal batches within each group (as the loop split them)
        key = slot_a * table.shape[0] + cut_a
        new = np.concatenate([[True], key[1:] != key[:-1]])
        g_start = np.flatnonzero(new)
        g_size = np.diff(np.append(g_start, m))
        g_of = np.cumsum(new) - 1
        pos = np.arange(m) - g_start[g_of]
        nb, q, r = split_batches(g_size, edge.max_batch)
        qg, rg = q[g_of], r[g_of]
        big = pos < rg * (qg + 1)
        local_b = np.where(big, pos // np.maximum(qg + 1, 1), rg + (pos - rg * (qg + 1)) // np.maximum(qg, 1))
        b_first = np.concatenate([[0], np.cumsum(nb)[:-1]])
        batch_of = b_first[g_of] + local_b
        n_b = int(nb.sum())
        size = np.bincount(batch_of, minlength=n_b)
        b_cut = np.zeros(n_b, np.int64)
        b_cut[batch_of] = cut_a
        b_slot = np.zeros(n_b, np.int64)
        b_slot[batch_of] = slot_a
        b_ready = np.full(n_b, -np.inf)
        np.maximum.at(b_ready, batch_of, ready_a)
        work = np.maximum(table[b_cut, size], 1e-12)
        fin = sent_times(tau, work, (b_slot + 1e-9) * tau, served, np.full(n_slots, float(edge.servers)))
        fin = np.maximum(fin, b_ready + work)  # nan stays nan: not served by the end
        done = fin[batch_of]
    return EdgeJobs(lane_a, frame_a, slot_a, cut_a, ready_a, done, batch_of)


def jain_index(x) -> float:
    """Jain's fairness index of ``x`` (1: all equal, 1/n: one gets everything)."""
    x = np.asarray(x, dtype=float)
    s2 = float((x * x).sum())
    return float(x.sum() ** 2 / (len(x) * s2)) if len(x) and s2 > 0 else math.nan


class SharedEdges:
    """The in-loop state of the shared edges of a batch (rules 1-4 of the module docstring):
    per lane, the uplink's frames as FIFO segments (one per slot with remote heads), so the loop
    knows which requests reach the edge in each slot, and per edge its work backlog.

    ``edge_of[j]``: the edge lane j's device uses (-1: none, the lane's own unbounded edge).
    """

    def __init__(self, edge: EdgeProfile, system: SystemModel, edge_of: np.ndarray, n_slots: int):
        self.edge = edge
        self.tau = system.slot_s
        self.bits = system.bits
        self.table = batch_table(edge, system)
        self.P = system.n_cuts
        self.edge_of = np.asarray(edge_of, dtype=np.int64)
        self.on = self.edge_of >= 0
        self.lanes_on = np.flatnonzero(self.on)
        self.E = int(self.edge_of.max()) + 1 if self.on.any() else 0
        S = len(self.edge_of)
        self.R = 64  # segments a lane's uplink may hold before the ring grows
        self.seg_n = np.zeros((S, self.R), np.int64)
        self.seg_cut = np.zeros((S, self.R), np.int64)
        self.seg_start = np.zeros((S, self.R))
        self.head = np.zeros(S, np.int64)
        self.tail = np.zeros(S, np.int64)
        self.taken = np.zeros(S, np.int64)
        self.made = np.zeros(S)   # bits put on the uplink so far
        self.sent = np.zeros(S)   # bits sent so far
        self.backlog = np.zeros(self.E)
        self.virtual = np.zeros(self.E)  # the backlog of a server at target_utilisation of the speed
        self.wait = np.zeros(S)   # what each lane is told at the next slot's start
        self.delivered = np.zeros((n_slots, S), np.int32)
        self.served = np.zeros((n_slots, self.E))
        self.backlog_s = np.zeros((n_slots, self.E))
        self.seen = np.zeros((n_slots, self.E))  # the wait the devices are told at each slot's start
        self.t = 0

    def _grow(self) -> None:
        S, R = self.seg_n.shape
        for name in ("seg_n", "seg_cut", "seg_start"):
            old = getattr(self, name)
            new = np.zeros((S, 2 * R), old.dtype)
            # unroll each lane's ring into the new one at the same positions modulo 2R
            for k in range(R):
                pos = self.head + k
                new[np.arange(S), pos % (2 * R)] = old[np.arange(S), pos % R]
            setattr(self, name, new)
        self.R = 2 * R

    def step(self, done: np.ndarray, cut: np.ndarray, sent: np.ndarray) -> np.ndarray:
        """Fold one slot in (heads ``done`` at ``cut``, bits ``sent``); the wait each lane sees next."""
        t = self.t
        self.t = t + 1
        D = self.bits[cut]
        mk = np.flatnonzero(self.on & (done > 0) & (D > 0.0))
        if mk.size:
            if int((self.tail[mk] - self.head[mk]).max()) >= self.R:
                self._grow()
            pos = self.tail[mk] % self.R
            self.seg_n[mk, pos] = done[mk]
            self.seg_cut[mk, pos] = cut[mk]
            self.seg_start[mk, pos] = self.made[mk]
            self.tail[mk] += 1
            self.made[mk] += done[mk] * D[mk]
        self.sent += sent
        counts = np.zeros(self.E * self.P)
        got_lane = self.delivered[t]
        a = self.lanes_on[self.head[self.lanes_on] < self.tail[self.lanes_on]]
        while a.size:
            pos = self.head[a] % self.R
            n = self.seg_n[a, pos]
            c = self.seg_cut[a, pos]
            Dc = self.bits[c]
            # frame k of the segment (mark start + k*D) is sent once the bits sent reach its mark
            # within simulation.dynamics.sent_times' tolerance (1e-6 relative)
            k = np.floor((self.sent[a] / (1.0 - 1e-6) - self.seg_start[a, pos]) / Dc + 1e-9)
            k = np.minimum(np.maximum(k, 0), n).astype(np.int64)
            new = k - self.taken[a]
            counts += np.bincount(self.edge_of[a] * self.P + c, weights=new, minlength=self.E * self.P)
            got_lane[a] += new.astype(np.int32)
            full = k >= n
            self.taken[a] = np.where(full, 0, k)
            self.head[a] += full
            a = a[full & (self.head[a] < self.tail[a])]
        w = slot_work(self.table, counts.reshape(self.E, self.P).astype(np.int64), self.edge.max_batch)
        cap = self.edge.servers * self.tau
        served = np.minimum(cap, self.backlog + w)
        self.backlog = self.backlog + w - served
        self.backlog[self.backlog < 1e-12] = 0.0
        rho = self.edge.target_utilisation
        self.virtual = np.maximum(self.virtual + w - rho * cap, 0.0)
        self.served[t] = served
        self.backlog_s[t] = self.backlog
        wait = np.maximum(self.backlog, self.virtual / rho) / self.edge.servers
        if t + 1 < len(self.seen):
            self.seen[t + 1] = wait
        self.wait[self.on] = wait[self.edge_of[self.on]]
        return self.wait


def apply_edge(shared: SharedEdges, e: int, lanes: list[int], results: list, system: SystemModel) -> dict:
    """Put edge ``e``'s completions into its devices' per-frame times (``results``: the
    SimResults of batch lanes ``lanes``, frames already rebuilt with an unbounded edge) and
    return the edge's figures for their summaries."""
    edge, tau = shared.edge, shared.tau
    n_slots = shared.served.shape[0]
    served = shared.served[:, e]
    frames = [r.frames for r in results]
    jobs = edge_completion_times(edge, shared.table, system.bits, tau, served, frames,
                                 [shared.delivered[:, j] for j in lanes], system.network.rtt_s)
    trip = system.result_trip_s
    horizon = n_slots * tau
    for i, fr in enumerate(frames):
        cut = fr["cut"]
        remote = np.isfinite(fr["head_done_s"]) & (system.bits[np.maximum(cut, 0)] > 0.0)
        tail = np.where(remote, np.nan, fr["tail_done_s"])
        mine = jobs.lane == i
        tail[jobs.frame[mine]] = jobs.done_s[mine]
        fr["tail_done_s"] = tail
        fr["result_s"] = np.where(remote, tail + trip, fr["result_s"])
        fr["completed"] = np.isfinite(fr["result_s"]) & (fr["result_s"] <= horizon)
        results[i].slots["edge_wait_s"] = shared.seen[:, e].copy()
    ok = np.isfinite(jobs.done_s)
    n_req = int(len(jobs.lane))
    n_batches = int(jobs.batch.max()) + 1 if n_req else 0
    backlog = shared.backlog_s[:, e] / edge.servers
    return {
        "profile": edge.name,
        "devices": len(lanes),
        "requests": n_req,
        "requests_done": int(ok.sum()),
        "batches": n_batches,
        "mean_batch": n_req / n_batches if n_batches else 0.0,
        "utilisation": float(served.sum() / (edge.servers * tau * n_slots)),
        "mean_backlog_s": float(backlog.mean()),
        "max_backlog_s": float(backlog.max()),
        "end_backlog_s": float(backlog[-1]),
        "mean_edge_ms": float(np.mean(jobs.done_s[ok] - jobs.ready_s[ok]) * 1e3) if ok.any() else math.nan,
    }


def summarize_devices(results: list, policy_name: str, cut_names: tuple[str, ...]) -> dict:
    """One summary for the N devices of a run (``results``: their SimResults), in the shape of
    ``simulator.summarize``'s: frame counts, energy and radio energy are totals; throughput and
    average power are per device (comparable with a single device's); energy per frame is total
    energy over total completed frames; latency percentiles are over every completed frame;
    queues are means over the devices (the maxima the largest); plus ``devices``,
    ``jain_fairness`` (Jain's index of the devices' throughputs) and the shared ``edge``'s figures."""
    from simulation.simulator import _percentiles, _shares

    sm = [r.summary for r in results]
    n = len(sm)
    duration = sm[0]["duration_s"]
    frames = {k: int(sum(s["frames"][k] for s in sm)) for k in sm[0]["frames"]}
    energy = float(sum(s["energy_j"] for s in sm))
    lat = np.concatenate([(r.frames["result_s"] - r.frames["arrival_s"])[r.frames["completed"]] for r in results]) * 1e3
    cuts = np.concatenate([r.slots["cut"][r.slots["process"]] for r in results])
    q = {k: float(np.mean([s["queues"][k] for s in sm])) for k in sm[0]["queues"]}
    q["max_Qc_frames"] = float(max(s["queues"]["max_Qc_frames"] for s in sm))
    fps = [s["throughput_fps"] for s in sm]
    return {
        "policy": policy_name,
        "slots": sm[0]["slots"],
        "slot_s": sm[0]["slot_s"],
        "duration_s": duration,
        "devices": n,
        "frames": frames,
        "throughput_fps": frames["completed"] / duration / n if duration else 0.0,
        "energy_j": energy,
        "energy_per_frame_j": energy / frames["completed"] if frames["completed"] else math.nan,
        "avg_power_w": energy / duration / n if duration else 0.0,
        "tx_energy_j": float(sum(s["tx_energy_j"] for s in sm)),
        "latency_ms": _percentiles(lat),
        "latency_ms_by_device": [s["latency_ms"]["mean"] for s in sm],
        "throughput_fps_by_device": fps,
        "jain_fairness": jain_index(fps),
        "queues": q,
        "decision_us": {"median": math.nan, "p99": math.nan},
        "choices": {
            "cut_share": dict(zip(cut_names, _shares(cuts, len(cut_names)))),
            "mean_gpu_hz": float(np.mean([s["choices"]["mean_gpu_hz"] for s in sm])),
            "busy_share": float(np.mean([s["choices"]["busy_share"] for s in sm])),
        },
        "edge": sm[0].get("edge"),
    }
