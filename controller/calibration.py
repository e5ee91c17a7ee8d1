"""Online calibration: the controller's tables follow what the board measures.

Every number the controller decides from is an estimate (a profile from FLOPs, a fitted clock
curve, a power polynomial), and a real board drifts from it while it runs (thermal throttling,
the memory clock, another process on the GPU). :class:`Calibrator` keeps running estimates from
what each slot measures and :class:`CalibratingController` folds them into the controller's
tables every ``refresh_slots`` slots (between slots; the decision itself is not slowed):

- **head time per (cut, level)**: a robust running mean of the measured time of one head (an
  EWMA whose samples are clipped to ``clip`` running deviations from the estimate, so one
  outlier, a page fault or a context switch, moves it little; a pair's first samples carry
  warm-up, so the estimate starts from the lower of two, then the median of three). A pair never run gets its time from
  the structure head times have: ``log T(p, f) = a_p + b_f`` (a cut's work times a level's speed).
  The table is fitted with that structure once; the measured pairs then move it by a common
  factor (free: a board running 25 % slow is slow on every cut) and by per-cut and per-level
  corrections (held towards none by a ridge), fitted by least squares;
- **board power per level**: each slot at level f gives ``E = tau*P_idle(f) + busy*(P_busy(f) -
  P_idle(f))`` (compute energy, the radio's taken out; ``busy`` the time heads ran). Board power
  is a smooth function of the clock, so ``P_idle`` and ``P_busy - P_idle`` are fitted as cubic
  polynomials in GHz (as the board profiles are) to every slot at once, by exponentially
  forgotten least squares; the table enters as pseudo-slots of total weight ``prior_weight``
  (one idle and one busy slot per level), so what is not yet measured stays near the table;
- **exploration** (off by default): a pair never run cannot be measured, and a table that is
  too pessimistic about it would never let it run. With ``explore_every = k``, while a cut or a
  level next to the decision (one step either way) has no measurement, one slot in k that runs
  heads runs them there. Measured on the default experiment (``benchmarks/calibration.py``) it
  costs more than it finds: the structure fill and the power fit already carry what the
  controller's own pairs measure to the pairs near them (energy gap after 60 s +0.57 % without,
  +1.20 % with k = 10, over 6 seeds; a neighbouring cut can send far more bits);
- **drift**: when the measured head times run ``drift_ratio`` above the table the controller
  started from for ``drift_s`` seconds in a row (throttling), or below its inverse, that is one
  event (:attr:`Calibrator.events`); the controller keeps deciding from the new estimates.

Pure numpy; the model's structure (``controller.model.SystemModel``) is unchanged, only its
``head_s``, ``busy_w`` and ``idle_w`` tables are replaced.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, replace

import numpy as np

from controller.model import SystemModel
from controller.policy import Decision, Observation, Outcome

MIN_SAMPLES = 2
"""Samples of a pair before its estimate replaces the table (the first ones carry warm-up)."""


@dataclass(frozen=True)
class CalibrationConfig:
    """Knobs of the online calibration (defaults: what ``benchmarks/calibration.py`` measures)."""

    alpha: float = 0.25          # EWMA weight of a new head-time sample
    clip: float = 4.0            # samples are clipped to this many running deviations
    forget: float = 0.998        # per-slot forgetting of the power fit (half-life ~350 slots)
    prior_weight: float = 2.0    # the table's weight in the power fit, in slots
    explore_every: int = 0       # one heads-running slot in this many explores (0: never, the default)
    structure_weight: float = 0.1  # ridge on the per-cut and per-level corrections of the head-
                                   #   time structure (a measured pair weighs its samples, up to 20)
    refresh_slots: int = 10      # slots between two folds of the estimates into the tables
    drift_ratio: float = 1.2     # head times this far above (or 1/ratio below) the start tables...
    drift_s: float = 3.0         # ...for this long: one drift event

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha}")
        if not self.clip > 0:
            raise ValueError(f"clip must be > 0, got {self.clip}")
        if not 0.0 < self.forget <= 1.0:
            raise ValueError(f"forget must be in (0, 1], got {self.forget}")
        if not (self.prior_weight > 0 and self.structure_weight > 0):
            raise ValueError("prior_weight and structure_weight must be > 0")
        if self.explore_every < 0:
            raise ValueError(f"explore_every must be >= 0, got {self.explore_every}")
        if self.refresh_slots < 1:
            raise ValueError(f"refresh_slots must be >= 1, got {self.refresh_slots}")
        if not (self.drift_ratio > 1.0 and self.drift_s > 0):
            raise ValueError("drift_ratio must be > 1 and drift_s > 0")


class Calibrator:
    """Running estimates of ``head_s[p, f]``, ``busy_w[f]`` and ``idle_w[f]`` from measurements."""

    def __init__(self, system: SystemModel, config: CalibrationConfig = CalibrationConfig()):
        self.config = config
        self.start = system
        self.tau = system.slot_s
        P, F = system.n_cuts, system.n_levels
        self.head = np.array(system.head_s, dtype=float)
        self.dev = 0.1 * self.head
        self.count = np.zeros((P, F), dtype=np.int64)
        self._first: dict[tuple[int, int], list[float]] = {}
        # the power fit: features [tau*g^k, busy*g^k] (k = 0..3, g = f in GHz) per level,
        # forgotten normal equations, seeded with the table as pseudo-slots
        g = np.asarray(system.levels_hz, dtype=float) / 1e9
        powers = g[:, None] ** np.arange(4)[None, :]
        self._feat_idle = self.tau * powers          # (F, 4)
        self._feat_busy = powers                      # times busy seconds
        self._gram = np.zeros((8, 8))
        self._rhs = np.zeros(8)
        w = self.config.prior_weight / F
        i0 = np.asarray(system.idle_w, dtype=float)
        b0 = np.asarray(system.busy_w, dtype=float)
        for f in range(F):
            for x, y in ((0.0, self.tau * i0[f]), (self.tau, self.tau * b0[f])):
                phi = np.concatenate([self._feat_idle[f], x * self._feat_busy[f]])
                self._gram += w * np.outer(phi, phi)
                self._rhs += w * y * phi
        self._gram += 1e-9 * np.eye(8)
        self.level_slots = np.zeros(F, dtype=np.int64)
        self.recent: deque[tuple[int, int, float, float, float, float]] = deque(maxlen=200)  # (p, f, head, busy, J, s)
        self.events: list[tuple[float, str]] = []
        self._drift_since: float | None = None
        self._drift_sign = 0
        self._drift_logged = {1: False, -1: False}
        self.slots = 0

    # -- measurements --------------------------------------------------------------------------
    def add(self, outcome: Outcome) -> None:
        """Fold one slot's measurements in (a slot with no pair or no measurement adds nothing)."""
        self.slots += 1
        p, f = outcome.cut, outcome.level
        if not (0 <= p < self.head.shape[0] and 0 <= f < self.head.shape[1]):
            return
        h = outcome.head_s
        if outcome.frames_done > 0 and math.isfinite(h) and h > 0 and self.start.head_s[p, f] > 0:
            self._add_head(p, f, h)
        else:
            h = math.nan
        e, x = outcome.compute_energy_j, outcome.busy_s
        dur = outcome.duration_s if math.isfinite(outcome.duration_s) and outcome.duration_s > 0 else self.tau
        if math.isfinite(e) and math.isfinite(x):
            self.recent.append((p, f, h, x, e, dur))
        if math.isfinite(e) and math.isfinite(x) and e >= 0 and 0 <= x <= dur:
            # a slot that ran over (a live agent's heads overran it) idles for dur - x, not tau - x
            phi = np.concatenate([self._feat_idle[f] * (dur / self.tau), x * self._feat_busy[f]])
            k = self.config.forget
            self._gram *= k
            self._rhs *= k
            self._gram += np.outer(phi, phi)
            self._rhs += e * phi
            if x > 0:
                self.level_slots[f] += 1

    def _add_head(self, p: int, f: int, h: float) -> None:
        cfg = self.config
        n = self.count[p, f]
        est, dev = self.head[p, f], self.dev[p, f]
        if n < 3:  # the first samples: the lower of two, then the median of three (a pair's first
            first = self._first.setdefault((p, f), [])  # run carries warm-up: lazy init, caches)
            first.append(h)
            if n == 1:
                est = min(first)
                dev = 0.1 * est
            elif n == 2:
                est = float(np.median(first))
                dev = max(float(np.median(np.abs(np.array(first) - est))), 0.05 * est)
                del self._first[(p, f)]
        else:
            lim = cfg.clip * max(dev, 0.01 * est)
            x = min(max(h, est - lim), est + lim)
            dev += cfg.alpha * (abs(x - est) - dev)
            est += cfg.alpha * (x - est)
        self.head[p, f], self.dev[p, f] = est, dev
        self.count[p, f] = n + 1
        if n >= 1:
            self._watch_drift(est / self.start.head_s[p, f])

    def _watch_drift(self, ratio: float) -> None:
        cfg = self.config
        now = self.slots * self.tau
        sign = 1 if ratio >= cfg.drift_ratio else (-1 if ratio <= 1.0 / cfg.drift_ratio else 0)
        if sign != self._drift_sign:
            self._drift_sign, self._drift_since = sign, now
            return
        if sign and not self._drift_logged[sign] and now - (self._drift_since or now) >= cfg.drift_s:
            self._drift_logged[sign] = True
            what = "slower" if sign > 0 else "faster"
            self.events.append((now, f"board drift: head times {ratio:.2f}x the start tables for "
                                     f"{cfg.drift_s:g} s ({what}); deciding from the measured estimates"))

    # -- estimates -----------------------------------------------------------------------------
    def head_table(self) -> np.ndarray:
        """``head_s[p, f]``: measured pairs from their running means, the others from the
        structure ``log T = a_p + b_f`` (see the module docstring)."""
        seen = self.count >= MIN_SAMPLES
        start = np.asarray(self.start.head_s, dtype=float)
        out = np.where(seen, self.head, start)
        if not seen.any():
            return out
        P, F = start.shape
        a0, b0 = self._table_structure()
        # what the measured pairs say, against the table's structure: a common factor c, free,
        # and per cut and per level corrections, each held towards 0 by the ridge weight
        ps, fs = np.nonzero(seen)
        w = np.minimum(self.count[ps, fs], 20).astype(float)
        y = np.log(self.head[ps, fs]) - a0[ps] - b0[fs]
        n = 1 + P + F
        A = np.zeros((n, n))
        rhs = np.zeros(n)
        for k, (p, f) in enumerate(zip(ps, fs)):
            idx = (0, 1 + p, 1 + P + f)
            for u in idx:
                rhs[u] += w[k] * y[k]
                for v in idx:
                    A[u, v] += w[k]
        lam = self.config.structure_weight
        A[1:, 1:] += lam * np.eye(P + F)
        A[0, 0] += 1e-9
        x = np.linalg.solve(A, rhs)
        fit = np.exp(a0[:, None] + b0[None, :] + x[0] + x[1:1 + P, None] + x[None, 1 + P:])
        return np.where((~seen) & (start > 0), fit, out)

    def _table_structure(self) -> tuple[np.ndarray, np.ndarray]:
        """(a0, b0) with log T(p, f) ~ a0_p + b0_f fitted to the start table's positive entries
        (cuts without a head get a0 = -inf, so their fill stays 0)."""
        if getattr(self, "_ab0", None) is None:
            start = np.asarray(self.start.head_s, dtype=float)
            pos = start > 0
            P, F = start.shape
            y = np.log(np.where(pos, start, 1.0))
            A = np.zeros((P + F, P + F))
            w = pos.astype(float)
            A[np.arange(P), np.arange(P)] = w.sum(axis=1)
            A[P + np.arange(F), P + np.arange(F)] = w.sum(axis=0)
            A[:P, P:] = w
            A[P:, :P] = w.T
            rhs = np.concatenate([(w * y).sum(axis=1), (w * y).sum(axis=0)])
            sol = np.linalg.lstsq(A + 1e-9 * np.eye(P + F), rhs, rcond=None)[0]
            a0 = np.where(pos.any(axis=1), sol[:P], -np.inf)
            self._ab0 = (a0, sol[P:])
        return self._ab0

    def power_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """(busy_w, idle_w) per level from the power fit (see the module docstring)."""
        coef = np.linalg.solve(self._gram, self._rhs)
        idle = np.maximum(self._feat_idle @ coef[:4] / self.tau, 1e-3)
        busy = np.maximum(idle + self._feat_busy @ coef[4:], idle)
        return busy, idle

    def unmeasured(self) -> tuple[list[int], list[int]]:
        """Cuts (with a head) and levels no head has been measured at yet."""
        has_head = (np.asarray(self.start.head_s) > 0).any(axis=1)
        seen = self.count >= MIN_SAMPLES
        cuts = [p for p in range(seen.shape[0]) if has_head[p] and not seen[p].any()]
        levels = [f for f in range(seen.shape[1]) if not seen[:, f].any()]
        return cuts, levels

    def system(self) -> SystemModel:
        """The start system with the current estimates in its tables."""
        head = self.head_table()
        busy, idle = self.power_tables()
        for a in (head, busy, idle):
            a.setflags(write=False)
        return replace(self.start, head_s=head, busy_w=busy, idle_w=idle)

    def error(self, truth: SystemModel, tables: SystemModel | None = None) -> dict[str, float]:
        """How far ``tables`` (default: the current estimates) are from ``truth`` (mean |relative
        error|): head times over the pairs, busy and idle power over the levels, and head energy
        (time x busy power)."""
        est = tables if tables is not None else self.system()
        pos = truth.head_s > 0

        def rel(a, b):
            return float(np.mean(np.abs(a / b - 1.0)))

        return {
            "head_s": rel(est.head_s[pos], truth.head_s[pos]),
            "busy_w": rel(est.busy_w, truth.busy_w),
            "idle_w": rel(est.idle_w, truth.idle_w),
            "head_j": rel((est.head_s * est.busy_w)[pos], (truth.head_s * truth.busy_w)[pos]),
        }

    def measured_error(self) -> dict:
        """The start tables and the current ones against the last slots' measurements (mean
        |relative error| of the head times and of the slots' compute energies): what a run can
        report without knowing the truth."""
        end = self.system()
        # head times over the pairs with an estimate (a pair run once keeps its table value)
        samples = [r for r in self.recent if self.count[r[0], r[1]] >= MIN_SAMPLES or not math.isfinite(r[2])]
        out: dict = {name: _against(tables, samples) for name, tables in (("start", self.start), ("end", end))}
        out["pairs_measured"] = int((self.count >= MIN_SAMPLES).sum())
        out["levels_measured"] = int((self.level_slots > 0).sum())
        out["slots_compared"] = len(self.recent)
        return out


def _against(tables: SystemModel, samples) -> dict[str, float]:
    """Mean |table / measured - 1| over ``samples`` (p, f, head s, busy s, compute energy J,
    the slot's duration s)."""
    heads = [tables.head_s[p, f] / h - 1.0 for p, f, h, _, _, _ in samples if math.isfinite(h) and h > 0]
    energies = [(dur * tables.idle_w[f] + x * (tables.busy_w[f] - tables.idle_w[f])) / e - 1.0
                for p, f, _, x, e, dur in samples if e > 0]
    return {"head_s": float(np.mean(np.abs(heads))) if heads else math.nan,
            "slot_energy": float(np.mean(np.abs(energies))) if energies else math.nan}


class CalibratingController:
    """A :class:`~controller.lyapunov.LyapunovController` whose tables follow a
    :class:`Calibrator`: the same decisions, on tables refreshed every ``refresh_slots`` slots
    (the controller's queues, multipliers and estimates carry over a refresh)."""

    def __init__(self, inner, config: CalibrationConfig = CalibrationConfig()):
        self.inner = inner
        self.name = inner.name
        self.config = config
        self.calibrator = Calibrator(inner.system, config)
        self._since = 0
        self._busy_slots = 0
        if not config.explore_every:  # no exploration: the controller's own decide, no wrapper call
            self.decide = inner.decide  # type: ignore[method-assign]

    @property
    def system(self) -> SystemModel:
        return self.inner.system

    @property
    def virtual_queues(self) -> dict[str, float]:
        return self.inner.virtual_queues

    @property
    def multipliers(self) -> dict[str, float]:
        return self.inner.multipliers

    def reset(self) -> None:
        self.calibrator = Calibrator(self.calibrator.start, self.config)
        self.inner.retable(self.calibrator.start)
        self.inner.reset()
        self._since = 0
        self._busy_slots = 0

    def decide(self, obs: Observation) -> Decision:
        d = self.inner.decide(obs)
        every = self.config.explore_every
        if not every or not d.process:
            return d
        self._busy_slots += 1
        if self._busy_slots % every:
            return d
        cuts, levels = self.calibrator.unmeasured()
        # only the decision's neighbours: cheap to try, and where a better pair would be
        cuts = [p for p in cuts if abs(p - d.cut) <= 1]
        levels = [f for f in levels if abs(f - d.level) <= 1]
        if not cuts and not levels:
            return d
        head = self.calibrator.start.head_s
        # an unmeasured cut and an unmeasured level at once, each the nearest to the decision
        if cuts:
            timed = cuts
        elif head[d.cut].max() > 0:
            timed = [d.cut]
        else:  # the decided cut runs no head (it sends the input): take the nearest one that does
            timed = [p for p in range(head.shape[0]) if head[p].max() > 0] or [d.cut]
        cut = min(timed, key=lambda p: abs(p - d.cut))
        level = min(levels, key=lambda f: abs(f - d.level)) if levels else d.level
        return d._replace(cut=cut, level=level)

    def observe(self, outcome: Outcome) -> None:
        self.inner.observe(outcome)
        self.calibrator.add(outcome)
        self._since += 1
        if self._since >= self.config.refresh_slots:
            self._since = 0
            self.inner.retable(self.calibrator.system())


__all__ = ["CalibratingController", "CalibrationConfig", "Calibrator"]
