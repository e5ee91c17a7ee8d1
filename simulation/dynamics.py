"""The slot dynamics of one device, written once for floats and for numpy arrays.

:func:`slot_step` advances the device queue, the GPU and the uplink by one slot. The scalar
simulator (:func:`simulation.simulator.simulate`) calls it on Python numbers with
:data:`~controller.ops.SCALAR`; the batched engine (:func:`simulation.batchsim.simulate_batch`)
calls the same function on arrays of shape (S,) over S scenarios with
:data:`~controller.ops.ARRAY`. There is no second copy of the rules.

The slot, with offsets in seconds from its start (``tau`` long):

1. a clock change costs ``switch`` seconds of GPU time: the GPU can start at ``switch``;
2. the GPU runs heads back to back, FIFO: first the frames queued at the start of the slot (the
   front one may be partly run: ``progress`` of it is done), then the frames arriving during the
   slot, each no earlier than its arrival. Work carries over: the frame running at the end of the
   slot keeps its progress, so a head longer than a slot still finishes. At a zero-time head (cut
   0: the input is sent as it is) a frame is done the moment it is there (a head partly run at
   another cut is then abandoned and its input sent);
3. arrivals are admitted if the decision admits them and the buffer has room for them beside
   the frames still queued after the backlog of step 2 (the first ones of the slot are admitted);
4. every finished head puts its ``D`` bits on the uplink at that instant; the uplink sends at the
   rate ``r`` whenever it holds bits (a fluid FIFO), so bits made during the slot may leave during
   it. The bits sent are ``min(r*tau, Q_x + n*D, min_k [Q_x + (k-1)*D + r*(tau - c_k)])`` over the
   slot's head completions ``c_k`` (the reflection formula of a fluid queue).

Per frame, the same rules give each head's completion time and each frame's last-bit time; the
simulator rebuilds them after the run from the per-slot records (:func:`head_done_times`,
:func:`sent_times`), exactly, because every queue is FIFO.
"""

from __future__ import annotations

import math

import numpy as np

from controller.ops import ARRAY, SCALAR

__all__ = ["ARRAY", "SCALAR", "head_done_times", "sent_times", "slot_step"]


def slot_step(ops, tau, T, D, switch, act, rate, queued, progress, qx, offsets, n_arrivals, admit, buffer):
    """One slot (module docstring). Every argument is a number, or an (S,) array with ``ARRAY``.

    ``T``: head time at the slot's (cut, level), s (0 at cut 0); ``D``: bits one head makes;
    ``switch``: GPU time lost to a clock change, s; ``act``: heads run this slot (bool); ``rate``:
    the uplink rate, bit/s, already capped by the capacity; ``queued``: frames queued at the start
    (the front one ``progress`` done); ``qx``: bits queued; ``offsets``: this slot's arrival
    offsets, ascending (floats, or (S,) arrays padded with ``inf``); ``n_arrivals``: how many
    arrive; ``admit``: admit them (bool); ``buffer``: the device queue's size, frames.

    Returns ``(done, busy, progress, queued, admitted, sent, qx)``: heads finished, GPU busy
    seconds, the front frame's progress and the frames queued at the end, frames admitted, bits
    sent and bits queued at the end.
    """
    where, minimum, maximum = ops.where, ops.minimum, ops.maximum
    start = minimum(switch, tau)
    Ts = where(T > 0.0, T, 1.0)  # a safe divisor: the branches that use it have T > 0
    p0 = progress
    has = act & (queued > 0)
    need = (queued - p0) * T
    fits = has & (start + need <= tau)
    over = has ^ fits
    total = p0 + (tau - start) / Ts
    whole = ops.floor(total)
    done_b = where(fits, queued, where(over, whole, 0))
    busy = where(fits, need, where(over, tau - start, 0.0))
    progress = where(fits, 0.0, where(over, total - whole, p0))
    # the GPU is free for the slot's arrivals from `free` on (tau: the backlog runs to the end)
    free = where(fits, start + need, where(over, tau, start))

    room = maximum(buffer - (queued - done_b), 0)
    admitted = where(admit, minimum(n_arrivals, room), 0)

    # the uplink's least term over the backlog's completions c_k = start + (k - p0)*T, k = 1..n:
    # linear in k, so it is at k = 1 or at k = n
    first = qx + rate * (tau - start - (1.0 - p0) * T)
    last = qx + D * (done_b - 1) + rate * (tau - start - (done_b - p0) * T)
    least = where(done_b >= 1, minimum(first, last), math.inf)

    made = done_b
    for j, s in enumerate(offsets):
        go = act & (j < admitted)
        st = maximum(free, s)
        fin = st + T
        run = go & (fin <= tau)
        part = go & (fin > tau) & (st < tau)
        least = where(run, minimum(least, qx + D * made + rate * (tau - fin)), least)
        busy = busy + where(run, T, where(part, tau - st, 0.0))
        progress = where(part, (tau - st) / Ts, progress)
        made = made + run
        free = where(run, fin, where(part, tau, free))

    sent = minimum(minimum(rate * tau, qx + made * D), least)
    sent = maximum(sent, 0.0)
    qx = qx + made * D - sent
    qx = where(qx < 1e-6, 0.0, qx)
    queued = queued - made + admitted
    return made, busy, progress, queued, admitted, sent, qx


# -- per-frame times, rebuilt after a run ------------------------------------------------------


def _segment_cummax(x: np.ndarray, seg: np.ndarray, span: float) -> np.ndarray:
    """Running maximum of ``x`` restarted at every change of ``seg`` (non-decreasing ints), for
    values within ``span`` of each other inside a segment: each segment is lifted above the
    previous one, one running maximum is taken, and the lift removed."""
    if len(x) == 0:
        return x.copy()
    rank = np.concatenate([[0], np.cumsum(seg[1:] != seg[:-1])]).astype(float)
    lift = rank * (2.0 * span + 1.0)
    return np.maximum.accumulate(x + lift) - lift


def head_done_times(tau: float, done: np.ndarray, T: np.ndarray, switch: np.ndarray, progress0: np.ndarray,
                    arrivals_s: np.ndarray) -> np.ndarray:
    """Completion time of each finished head, in order, for one run.

    ``done[t]`` heads finish in slot t at head time ``T[t]`` after a clock change of
    ``switch[t]``, the front frame ``progress0[t]`` done at the slot's start; ``arrivals_s`` are
    the arrival times of the admitted frames in FIFO order (at least ``done.sum()`` of them).
    Within a slot the k-th completion (k = 0, 1, ...) is ``c_k = max(c_{k-1}, b_k) + T`` with
    ``b_k = max(arrival, slot start + switch)`` (less ``progress0*T`` for a partly run front
    frame), so ``c_k = (k+1)*T + max_{i<=k}(b_i - i*T)``: a running maximum per slot.
    """
    n_slots = len(done)
    total = int(done.sum())
    slot = np.repeat(np.arange(n_slots), done)
    k = np.arange(total) - np.repeat(np.cumsum(done) - done, done)
    Tk = T[slot]
    t0 = slot * tau + np.minimum(switch[slot], tau)
    b = np.maximum(arrivals_s[:total], t0)
    b = np.where((k == 0) & (progress0[slot] > 0.0), t0 - progress0[slot] * Tk, b)
    # b - k*T lies within [slot start - T, slot end], so the span per slot is below 2*tau + T
    span = 2.0 * tau + float(T.max(initial=0.0))
    rel = b - k * Tk - slot * tau
    return (k + 1) * Tk + _segment_cummax(rel, slot, span) + slot * tau


def sent_times(tau: float, bits: np.ndarray, made_s: np.ndarray, sent: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """Time each frame's last bit leaves the uplink (nan: not sent by the end), for one run.

    ``bits`` (> 0) and ``made_s`` are the frames' bits and the times their heads put them on the
    uplink, in FIFO order; ``sent[t]`` bits leave in slot t at ``rate[t]``. In the slot t where
    the cumulative bits up to frame i (``X_i``) have left, the fluid FIFO gives
    ``d_i = max(t*tau + (X_i - S_t)/r, max_j (c_j + (X_i - X_{j-1})/r))`` over the frames j <= i
    made in that same slot (``S_t``: bits sent before slot t).
    """
    n_slots = len(sent)
    out = np.full(len(bits), np.nan)
    if len(bits) == 0:
        return out
    X = np.cumsum(bits)
    X_prev = X - bits
    cum_end = np.cumsum(sent)
    cum_start = cum_end - sent
    tol = 1e-6 * np.maximum(1.0, X)
    slot_of = np.searchsorted(cum_end, X - tol, side="left")
    ok = slot_of < n_slots
    s = np.minimum(slot_of, n_slots - 1)
    r = rate[s]
    live = ok & (r > 0.0)
    r_safe = np.where(r > 0.0, r, 1.0)
    from_start = s * tau + (X - cum_start[s]) / r_safe
    made_slot = np.minimum((made_s // tau).astype(np.int64), n_slots - 1)
    # frames whose bits were made in the slot they leave in: the fluid queue may have idled
    same = made_slot == s
    r_made = rate[made_slot]
    y = made_s - X_prev / np.where(r_made > 0.0, r_made, 1.0)
    # within a slot y_j - X_i/r spans at most a slot plus the slot's sending time
    span = tau + float(np.max(np.abs(y - made_slot * tau), initial=0.0)) + 1.0
    run = _segment_cummax(y - made_slot * tau, made_slot, span) + made_slot * tau
    d = np.where(same, np.maximum(from_start, X / r_safe + run), from_start)
    d = np.maximum(d, made_s)
    out[live] = np.clip(d[live], s[live] * tau, (s[live] + 1) * tau)
    return out
