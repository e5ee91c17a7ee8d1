"""The contract between a decision policy and whatever runs it (simulator or live agent).

Every slot of length ``slot_s`` the runner builds an :class:`Observation`, asks the policy for a
:class:`Decision`, applies it for the slot, and reports what actually happened as an
:class:`Outcome`. The Lyapunov controller and every baseline implement :class:`Policy`; the
trace-driven simulator and the live device agent only differ in where the observation comes from
and how the decision is carried out (SimPy's ``RealtimeEnvironment`` idea).

Units are SI: frames, bits, bit/s, s, J.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np


class Observation(NamedTuple):
    """What the device knows at the start of slot ``t``."""

    t: int                 # slot index
    queue_frames: float    # Q_c: frames waiting for (or in) the head, fractional progress removed
    queue_bits: float      # Q_x: bits waiting for the uplink
    capacity_bps: float    # C(t): uplink capacity this slot (trace) or its estimate (live)
    arrivals: int          # A(t-1): frames that arrived during the previous slot
    edge_wait_s: float = 0.0  # tail work queued at the edge ahead of a new request, s, as the
                              # edge last reported it (a shared edge's backlog; 0: idle or unknown)


class Decision(NamedTuple):
    """What to do during the slot."""

    cut: int          # index into the model's offered cuts; 0 sends the input, last = local only
    level: int        # index into the board's GPU levels (ascending)
    rate_bps: float   # uplink transmit rate, 0 <= rate <= capacity (bits the slot's heads make may
                      # leave in the slot too; the runner sends only what is there)
    process: bool     # run heads this slot (False: the GPU idles)
    admit: bool       # accept the frames arriving during this slot


class Outcome(NamedTuple):
    """What actually happened during the slot (fed back to update virtual queues, and to the
    calibration when it is on). The measured fields are optional: NaN/-1 when not known."""

    energy_j: float        # device energy of the slot: compute + idle + radio
    frames_done: int       # heads finished this slot
    bits_sent: float       # bits that left the uplink queue
    cut: int = -1          # the (cut, level) pair that ran, as carried out (may differ from
    level: int = -1        #   the decision: an edge that is down keeps frames local)
    head_s: float = math.nan            # measured time of one head this slot (mean over heads)
    busy_s: float = math.nan            # time the GPU ran heads this slot
    compute_energy_j: float = math.nan  # energy_j less the radio's
    duration_s: float = math.nan        # the time the slot's energy covers (a live slot can overrun)


@runtime_checkable
class Policy(Protocol):
    """A decision rule for one device. ``reset`` before a run, then ``decide``/``observe`` per slot."""

    name: str

    def reset(self) -> None: ...

    def decide(self, obs: Observation) -> Decision: ...

    def observe(self, outcome: Outcome) -> None: ...


def check_decision(decision: Decision, obs: Observation, n_cuts: int, n_levels: int) -> None:
    """Raise ``ValueError`` if ``decision`` breaks the contract for ``obs``."""
    if not isinstance(decision, Decision):
        raise ValueError(f"decide() must return a Decision, got {type(decision).__name__}")
    if not 0 <= decision.cut < n_cuts:
        raise ValueError(f"cut {decision.cut} outside [0, {n_cuts})")
    if not 0 <= decision.level < n_levels:
        raise ValueError(f"level {decision.level} outside [0, {n_levels})")
    r = decision.rate_bps
    if not (math.isfinite(r) and r >= 0.0):
        raise ValueError(f"rate_bps must be finite and >= 0, got {r}")
    if r > obs.capacity_bps * (1 + 1e-9) + 1e-9:
        raise ValueError(f"rate_bps {r:g} exceeds capacity {obs.capacity_bps:g}")


def check_policy(policy: Policy, n_cuts: int, n_levels: int, seed: int = 0, slots: int = 200) -> None:
    """Conformance check for any policy: valid decisions on random states, deterministic after reset.

    Feeds the same random observations twice (with a reset in between) and requires the same
    decisions, so a policy whose choices depend on hidden global state fails here.
    """
    rng = np.random.default_rng(seed)
    observations = [
        Observation(
            t=t,
            queue_frames=float(rng.integers(0, 30)),
            queue_bits=float(rng.choice([0.0, rng.uniform(0, 5e7)])),
            capacity_bps=float(rng.choice([0.0, rng.uniform(1e5, 1e8)])),
            arrivals=int(rng.integers(0, 5)),
        )
        for t in range(slots)
    ]
    outcomes = [Outcome(float(rng.uniform(0, 2.0)), int(rng.integers(0, 3)), float(rng.uniform(0, 1e6))) for _ in range(slots)]
    runs = []
    for _ in range(2):
        policy.reset()
        decisions = []
        for obs, out in zip(observations, outcomes):
            d = policy.decide(obs)
            check_decision(d, obs, n_cuts, n_levels)
            policy.observe(out)
            decisions.append(d)
        runs.append(decisions)
    if runs[0] != runs[1]:
        first = next(i for i, (a, b) in enumerate(zip(*runs)) if a != b)
        raise ValueError(f"policy {policy.name!r} is not deterministic after reset (slot {first})")
