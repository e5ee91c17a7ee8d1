"""Frame-accurate, trace-driven simulator of one device, its uplink and the edge.

Time is slotted (``slot_s``). In slot t the policy sees the queues and the capacity C(t) and
returns (cut, level, rate, process, admit); then the slot runs by the rules of
:func:`simulation.dynamics.slot_step`, the one implementation the batched engine shares: a clock
change costs the switch latency, heads run back to back on the queued frames and then on the
frames arriving during the slot (each from its arrival on), bits leave the uplink as soon as a
head has made them, at the chosen rate, and arrivals are admitted while the buffer has room
(the others are counted as dropped).

Energy per slot: ``busy*P_busy(f) + (slot - busy)*P_idle(f)`` plus the radio's ``P_tx(r)`` for
the time it sends. The per-frame times (arrival, head done, last bit sent, tail done, result back)
are rebuilt after the run from the per-slot records by the same rules
(:func:`~simulation.dynamics.head_done_times`, :func:`~simulation.dynamics.sent_times`), which is
exact because every queue is FIFO: the i-th admitted frame is the i-th head completion, and its
bits leave when the cumulative bits sent reach the cumulative bits queued up to it. The edge is
not a bottleneck (it serves requests in parallel); the result returns after half an RTT plus its
transfer on the downlink.

Frames are counted where they arrive, are dropped, finish and remain queued, each independently;
``summarize`` checks ``arrived = completed + dropped + queued on the device + in the uplink or at
the edge``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from controller.model import SystemModel
from controller.policy import Decision, Observation, Outcome, Policy
from simulation.dynamics import SCALAR, head_done_times, sent_times, slot_step


@dataclass
class SimResult:
    """Everything a run produced: per-slot series, per-frame times and the summary."""

    slot_s: float
    slots: dict[str, np.ndarray]
    frames: dict[str, np.ndarray]
    end: dict = field(default_factory=dict)  # the device's state after the last slot
    summary: dict = field(default_factory=dict)


def simulate(
    system: SystemModel,
    policy: Policy,
    capacity_bps: np.ndarray,
    arrival_times_s: np.ndarray,
    *,
    buffer_frames: int = 1000,
    time_decisions: bool = True,
) -> SimResult:
    """Run ``policy`` over ``len(capacity_bps)`` slots with frames arriving at ``arrival_times_s``."""
    tau = system.slot_s
    n_slots = int(len(capacity_bps))
    horizon = n_slots * tau
    cap = np.ascontiguousarray(capacity_bps, dtype=float)
    arrivals = np.sort(np.asarray(arrival_times_s, dtype=float))
    arrivals = arrivals[(arrivals >= 0) & (arrivals < horizon)]
    arr_slot = np.minimum((arrivals // tau).astype(np.int64), n_slots - 1)
    per_slot_arrivals = np.bincount(arr_slot, minlength=n_slots).tolist()
    bounds = np.searchsorted(arr_slot, np.arange(n_slots + 1)).tolist()
    offsets = (arrivals - arr_slot * tau).tolist()

    head_s = system.head_s.tolist()
    bits = system.bits.tolist()
    busy_w = system.busy_w.tolist()
    idle_w = system.idle_w.tolist()
    switch_s = float(system.board.switch_latency_s)
    net = system.network
    linear = net.model == "linear"
    tx_power = system.tx_power_w
    n_cuts, n_levels = system.n_cuts, system.n_levels
    step = slot_step

    # per-slot records (preallocated; filled by index)
    rec_cut = np.zeros(n_slots, np.int16)
    rec_level = np.zeros(n_slots, np.int16)
    rec_rate = np.zeros(n_slots)
    rec_sent = np.zeros(n_slots)
    rec_qc = np.zeros(n_slots)
    rec_qx = np.zeros(n_slots)
    rec_energy = np.zeros(n_slots)
    rec_tx_energy = np.zeros(n_slots)
    rec_busy = np.zeros(n_slots)
    rec_done = np.zeros(n_slots, np.int64)
    rec_switch = np.zeros(n_slots)
    rec_progress = np.zeros(n_slots)
    rec_admitted = np.zeros(n_slots, np.int64)
    rec_dec_ns = np.zeros(n_slots, np.int64)
    rec_process = np.zeros(n_slots, bool)
    vq_names = list(getattr(policy, "virtual_queues", {}).keys())
    rec_vq = {name: np.zeros(n_slots) for name in vq_names}

    policy.reset()
    queued = 0          # frames in the device queue (the front one may be partly done)
    progress = 0.0      # fraction of the front frame's head already run
    qx = 0.0            # bits waiting for the uplink
    prev_level = -1
    last_arrivals = 0
    perf = time.perf_counter_ns
    for t in range(n_slots):
        c_t = cap[t]
        obs = Observation(t, queued - progress, qx, c_t, last_arrivals)
        if time_decisions:
            t0 = perf()
            d: Decision = policy.decide(obs)
            rec_dec_ns[t] = perf() - t0
        else:
            d = policy.decide(obs)
        p, f = d.cut, d.level
        if not (0 <= p < n_cuts and 0 <= f < n_levels):
            raise ValueError(f"policy {policy.name!r} chose cut {p}, level {f} outside the tables")
        switch = switch_s if (prev_level >= 0 and f != prev_level) else 0.0
        prev_level = f
        rate = d.rate_bps
        if rate > c_t:
            rate = c_t
        if rate < 0.0:
            rate = 0.0
        a = per_slot_arrivals[t]
        rec_progress[t] = progress
        done, busy, progress, queued, admitted, sent, qx_new = step(
            SCALAR, tau, head_s[p][f], bits[p], switch, bool(d.process), rate, queued, progress, qx,
            offsets[bounds[t]:bounds[t + 1]], a, bool(d.admit), buffer_frames,
        )
        e_compute = busy * busy_w[f] + (tau - busy) * idle_w[f]
        e_tx = 0.0
        if sent > 0.0:
            send_time = sent / rate
            e_tx = tx_power(rate, c_t) * send_time if not linear else (net.alpha_w_per_bps * rate + net.beta_w) * send_time
        qx = qx_new
        last_arrivals = a

        energy = e_compute + e_tx
        policy.observe(Outcome(energy, done, sent, p, f, head_s[p][f] if done else math.nan, busy, e_compute))

        rec_cut[t] = p
        rec_level[t] = f
        rec_rate[t] = rate if sent > 0.0 else 0.0
        rec_sent[t] = sent
        rec_qc[t] = obs.queue_frames
        rec_qx[t] = obs.queue_bits
        rec_energy[t] = energy
        rec_tx_energy[t] = e_tx
        rec_busy[t] = busy
        rec_done[t] = done
        rec_switch[t] = switch
        rec_admitted[t] = admitted
        rec_process[t] = d.process
        for name in vq_names:
            rec_vq[name][t] = policy.virtual_queues[name]

    slots = {
        "time_s": np.arange(n_slots) * tau,
        "capacity_bps": cap,
        "cut": rec_cut,
        "level": rec_level,
        "gpu_hz": system.levels_hz[rec_level],
        "rate_bps": rec_rate,
        "sent_bits": rec_sent,
        "Qc_frames": rec_qc,
        "Qx_bits": rec_qx,
        "energy_j": rec_energy,
        "tx_energy_j": rec_tx_energy,
        "busy_s": rec_busy,
        "heads_done": rec_done,
        "switch_s": rec_switch,
        "progress": rec_progress,
        "admitted": rec_admitted,
        "arrivals": np.asarray(per_slot_arrivals, dtype=np.int64),
        "decision_ns": rec_dec_ns,
        "process": rec_process,
        **rec_vq,
    }
    frames = frame_times(system, arrivals, arr_slot, slots)
    result = SimResult(slot_s=tau, slots=slots, frames=frames, end={"queued_frames": int(queued), "queued_bits": float(qx)})
    result.summary = summarize(result, getattr(policy, "name", type(policy).__name__), system.cut_names)
    return result


def frame_times(system: SystemModel, arrivals: np.ndarray, arr_slot: np.ndarray, slots: dict) -> dict[str, np.ndarray]:
    """Per-frame timestamps from the per-slot records (see the module docstring)."""
    tau = system.slot_s
    admitted = slots["admitted"]
    done = slots["heads_done"]
    cut = slots["cut"].astype(np.int64)
    n_slots = len(done)
    n_arr = len(arrivals)
    # which arrivals were admitted: the first `admitted[t]` of the frames arriving in slot t
    per_slot = np.bincount(arr_slot, minlength=n_slots)[:n_slots]
    slot_start_idx = np.cumsum(per_slot) - per_slot
    rank_in_slot = np.arange(n_arr) - slot_start_idx[arr_slot]
    is_admitted = rank_in_slot < admitted[arr_slot]
    adm_idx = np.flatnonzero(is_admitted)

    n_done = min(int(done.sum()), len(adm_idx))
    if n_done < int(done.sum()):  # pragma: no cover - the dynamics never finish a frame twice
        raise RuntimeError("more heads finished than frames were admitted")
    T = system.head_s[cut, slots["level"].astype(np.int64)]
    comp_time = head_done_times(tau, done, T, slots["switch_s"], slots["progress"], arrivals[adm_idx])
    comp_cut = np.repeat(cut, done)
    done_idx = adm_idx[:n_done]
    head_done = np.full(n_arr, np.nan)
    frame_cut = np.full(n_arr, -1, np.int64)
    head_done[done_idx] = comp_time
    frame_cut[done_idx] = comp_cut

    # uplink: FIFO over the frames with bits to send
    fbits = system.bits[comp_cut]
    needs = fbits > 0
    sent_time = np.full(n_arr, np.nan)
    sent_time[done_idx[needs]] = sent_times(tau, fbits[needs], comp_time[needs], slots["sent_bits"], slots["rate_bps"])
    sent_time[done_idx[~needs]] = head_done[done_idx[~needs]]

    net = system.network
    tail_done = np.full(n_arr, np.nan)
    back = np.full(n_arr, np.nan)
    remote = system.bits[comp_cut] > 0
    tail_done[done_idx] = np.where(remote, sent_time[done_idx] + net.rtt_s / 2 + system.tail_s[comp_cut], head_done[done_idx])
    back[done_idx] = np.where(remote, tail_done[done_idx] + system.result_trip_s, head_done[done_idx])
    completed = np.isfinite(back) & (back <= n_slots * tau)
    return {
        "arrival_s": arrivals,
        "admitted": is_admitted,
        "head_done_s": head_done,
        "sent_s": sent_time,
        "tail_done_s": tail_done,
        "result_s": back,
        "cut": frame_cut,
        "completed": completed,
    }


def _quantiles(x: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """``np.percentile(x, qs)`` (its default, linear interpolation) from one sort: a summary is
    made per run, and thousands of runs make a sweep."""
    v = np.sort(x)
    top = len(v) - 1
    out = []
    for q in qs:
        pos = q / 100.0 * top
        lo = math.floor(pos)
        hi = min(lo + 1, top)
        out.append(float(v[lo] + (v[hi] - v[lo]) * (pos - lo)))
    return out


def _percentiles(x: np.ndarray) -> dict[str, float]:
    if len(x) == 0:
        return {"mean": math.nan, "p50": math.nan, "p95": math.nan, "p99": math.nan}
    p50, p95, p99 = _quantiles(x, (50.0, 95.0, 99.0))
    return {"mean": float(x.mean()), "p50": p50, "p95": p95, "p99": p99}


def _shares(x: np.ndarray, n: int) -> list[float]:
    """The share of each value 0..n-1 among the ints ``x`` (all 0 when ``x`` is empty)."""
    if len(x) == 0:
        return [0.0] * n
    return (np.bincount(x.astype(np.int64), minlength=n)[:n] / len(x)).tolist()


def summarize(result: SimResult, policy_name: str, cut_names: tuple[str, ...]) -> dict:
    s, fr, tau = result.slots, result.frames, result.slot_s
    n_slots = len(s["time_s"])
    duration = n_slots * tau
    # each count from its own source: arrivals, the slots' admissions, the frames' result times,
    # the device queue the dynamics left, and the heads done whose result is not back yet
    arrived = int(len(fr["arrival_s"]))
    dropped = int(s["arrivals"].sum() - s["admitted"].sum())
    completed = int(fr["completed"].sum())
    queued_device = int(result.end.get("queued_frames", 0))
    after_head = int((np.isfinite(fr["head_done_s"]) & ~fr["completed"]).sum())
    in_flight = queued_device + after_head
    if arrived != completed + dropped + in_flight:
        raise RuntimeError(
            f"frames not conserved: {arrived} arrived != {completed} completed + {dropped} dropped + "
            f"{queued_device} queued + {after_head} in the uplink or at the edge"
        )
    energy = float(s["energy_j"].sum())
    lat_ms = (fr["result_s"][fr["completed"]] - fr["arrival_s"][fr["completed"]]) * 1e3
    dec_us = s["decision_ns"] / 1e3
    out = {
        "policy": policy_name,
        "slots": n_slots,
        "slot_s": tau,
        "duration_s": duration,
        "frames": {"arrived": arrived, "completed": completed, "dropped": dropped, "in_flight": in_flight,
                   "queued_device": queued_device, "in_uplink_or_edge": after_head},
        "throughput_fps": completed / duration if duration else 0.0,
        "energy_j": energy,
        "energy_per_frame_j": energy / completed if completed else math.nan,
        "avg_power_w": energy / duration if duration else 0.0,
        "tx_energy_j": float(s["tx_energy_j"].sum()),
        "latency_ms": _percentiles(lat_ms),
        "queues": {
            "mean_Qc_frames": float(s["Qc_frames"].mean()),
            "mean_Qx_bits": float(s["Qx_bits"].mean()),
            "max_Qc_frames": float(s["Qc_frames"].max()) if n_slots else 0.0,
            "end_Qc_frames": float(s["Qc_frames"][-1]) if n_slots else 0.0,
            "end_Qx_bits": float(s["Qx_bits"][-1]) if n_slots else 0.0,
        },
        "decision_us": dict(zip(("median", "p99"), _quantiles(dec_us, (50.0, 99.0)) if n_slots else (math.nan, math.nan))),
        "choices": {
            "cut_share": dict(zip(cut_names, _shares(s["cut"][s["process"]], len(cut_names)))),
            "mean_gpu_hz": float(np.mean(s["gpu_hz"])) if n_slots else math.nan,
            "busy_share": float(s["busy_s"].sum() / duration) if duration else 0.0,
        },
    }
    return out
