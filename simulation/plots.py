"""Figures of a run: what the controller saw and chose, slot by slot.

matplotlib is imported here only (with the non-interactive Agg backend), so runs that do not
plot never pay for it.
"""

from __future__ import annotations

import os

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_timeseries(slots: dict[str, np.ndarray], cut_names: list[str], path: str | os.PathLike[str], title: str = "") -> None:
    """Capacity and rate, chosen cut, GPU clock, queues and power against time, one panel each."""
    plt = _pyplot()
    t = slots["time_s"]
    fig, axes = plt.subplots(5, 1, figsize=(11, 12), sharex=True, constrained_layout=True)
    ax = axes[0]
    ax.plot(t, slots["capacity_bps"] / 1e6, color="0.6", lw=0.8, label="capacity C(t)")
    ax.plot(t, slots["rate_bps"] / 1e6, color="tab:blue", lw=0.8, label="transmit rate r(t)")
    ax.set_ylabel("uplink (Mbit/s)")
    ax.legend(loc="upper right", fontsize=8)

    ax = axes[1]
    cut = slots["cut"].astype(float)
    cut[~slots["process"]] = np.nan
    ax.step(t, cut, where="post", color="tab:purple", lw=0.9)
    ax.set_yticks(range(len(cut_names)))
    ax.set_yticklabels(cut_names, fontsize=7)
    ax.set_ylabel("split point")
    ax.set_ylim(-0.5, len(cut_names) - 0.5)

    ax = axes[2]
    ax.step(t, slots["gpu_hz"] / 1e6, where="post", color="tab:orange", lw=0.9)
    ax.set_ylabel("GPU clock (MHz)")

    ax = axes[3]
    ax.plot(t, slots["Qc_frames"], color="tab:red", lw=0.9, label="Q_c device queue (frames)")
    ax.set_ylabel("Q_c (frames)")
    ax2 = ax.twinx()
    ax2.plot(t, slots["Qx_bits"] / 1e6, color="tab:green", lw=0.9, label="Q_x uplink queue (Mbit)")
    ax2.set_ylabel("Q_x (Mbit)")
    lines = ax.get_lines() + ax2.get_lines()
    for name in ("Z_E", "Z_T", "Z_L"):
        if name in slots and np.any(slots[name] > 0):
            (ln,) = ax.plot(t, slots[name], lw=0.8, ls="--", label=f"{name} (virtual)")
            lines.append(ln)
    ax.legend(lines, [ln.get_label() for ln in lines], loc="upper left", fontsize=8)

    ax = axes[4]
    slot_s = float(t[1] - t[0]) if len(t) > 1 else 1.0
    power = slots["energy_j"] / slot_s
    tx = slots["tx_energy_j"] / slot_s
    ax.plot(t, power, color="k", lw=0.7, label="device power")
    ax.plot(t, tx, color="tab:cyan", lw=0.7, label="of which radio")
    ax.set_ylabel("power (W)")
    ax.set_xlabel("time (s)")
    ax.legend(loc="upper right", fontsize=8)
    for a in axes:
        a.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.savefig(path, dpi=110)
    plt.close(fig)
