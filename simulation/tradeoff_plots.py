"""Trade-off figures of a sweep: energy per frame against latency, and both against V.

Drawn from the rows of ``sweep.csv`` and ``bound.csv`` only (``cutedge plot DIR`` redraws
without re-running). One panel per trace shows energy per frame against mean latency: each V
policy is a curve over V (the controller in black), each baseline a point, the LP bound p* a
dashed line; runs that drop frames or fall behind the camera are hollow and left off the curves
(their latency only counts the frames that got through). The next row shows, averaged over
traces, energy per frame and mean latency against V (log axis) and throughput against V with the
fixed baselines as horizontal lines. A sweep over device counts (``devices``) adds a last row:
mean latency, energy per frame and edge utilisation against the number N of devices sharing the
edge, each policy a line (the controller one per V); the trace panels then show the smallest N.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict

import numpy as np

from simulation.frontier import offered_fps, seed_groups
from simulation.plots import _pyplot

V_STYLE = {
    "cutedge": dict(color="black", lw=2.2, ls="-", marker="o", label="CutEdge (Lyapunov)"),
    "cutedge-no-dvfs": dict(color="tab:orange", lw=1.3, ls="--", marker=".", label="CutEdge without DVFS"),
    "cutedge-no-rate": dict(color="tab:green", lw=1.3, ls="--", marker=".", label="CutEdge without rate control"),
    "fixed-rate": dict(color="tab:olive", lw=1.3, ls="--", marker=".", label="fixed-rate uplink"),
    "cutedge-no-vq": dict(color="tab:purple", lw=1.3, ls="-.", marker=".", label="CutEdge without virtual queues"),
    "dvfs-only": dict(color="tab:brown", lw=1.3, ls=":", marker=".", label="DVFS-only (best static cut)"),
}
POINT_STYLE = {
    "local": dict(color="tab:red", marker="s", label="local only (f max)"),
    "edge": dict(color="tab:blue", marker="^", label="edge only"),
    "neurosurgeon": dict(color="tab:cyan", marker="D", label="Neurosurgeon"),
    "energy-greedy": dict(color="tab:pink", marker="v", label="energy-greedy"),
    "static-best": dict(color="goldenrod", marker="*", label="best static (hindsight)"),
    "jointdnn": dict(color="tab:gray", marker="P", label="JointDNN"),
}


SHORT = {"local": "local", "edge": "edge", "neurosurgeon": "Neurosurgeon", "energy-greedy": "greedy",
         "static-best": "static", "jointdnn": "JointDNN"}


def _coincident(pts: list[tuple[str, dict]], tol: float = 0.015) -> list[list[tuple[str, dict]]]:
    """Group baseline points closer than ``tol`` (relative, in latency and energy)."""
    groups: list[list[tuple[str, dict]]] = []
    for p, r in pts:
        x, y = r["latency_ms_mean"], r["energy_per_frame_j"]
        for g in groups:
            gx, gy = g[0][1]["latency_ms_mean"], g[0][1]["energy_per_frame_j"]
            if abs(x - gx) <= tol * max(abs(gx), 1e-9) and abs(y - gy) <= tol * max(abs(gy), 1e-9):
                g.append((p, r))
                break
        else:
            groups.append([(p, r)])
    return groups


def _serves(row: dict, fraction: float = 0.99) -> bool:
    arrived = row.get("frames_arrived", math.nan)
    done = row.get("frames_completed", math.nan)
    dropped = row.get("frames_dropped", 0.0)
    return bool(arrived > 0 and done >= fraction * arrived and not dropped > 0)


def _mean_over_seeds(rows: list[dict]) -> list[dict]:
    """One row per (policy, V, trace): numeric columns averaged over the seeds that have them."""
    out = []
    for (trace, policy, V), rs in seed_groups(rows).items():
        row = {"policy": policy, "V": V, "trace": trace}
        for key in ("energy_per_frame_j", "latency_ms_mean", "latency_ms_p95", "throughput_fps", "avg_power_w"):
            vals = np.array([r.get(key, math.nan) for r in rs], dtype=float)
            row[key] = float(np.nanmean(vals)) if np.isfinite(vals).any() else math.nan
        row["serves"] = all(_serves(r) for r in rs)
        rates = [offered_fps(r) for r in rs if r.get("duration_s")]
        row["arrival_fps"] = float(np.mean(rates)) if rates else math.nan
        out.append(row)
    return out


def _p_star(bounds: list[dict]) -> dict[str, float]:
    by_trace: dict = defaultdict(list)
    for b in bounds:
        if b.get("p_star_j_per_frame") is not None and math.isfinite(b.get("p_star_j_per_frame", math.nan)):
            by_trace[b["trace"]].append((b.get("seed"), b["p_star_j_per_frame"]))
    out = {}
    for trace, vals in by_trace.items():
        per_seed = dict(vals)  # one value per seed (repeated on every V row)
        out[trace] = float(np.mean(list(per_seed.values())))
    return out


def plot_tradeoff(rows: list[dict], bounds: list[dict], path: str | os.PathLike[str], title: str = "",
                  hindsight: list[dict] | None = None) -> None:
    """Write the trade-off figure (see the module docstring) to ``path``; ``hindsight``: rows of
    ``hindsight.csv`` (trace, latency_ms, e_star_j_per_frame), drawn as E*(L) under the curves."""
    plt = _pyplot()
    from matplotlib.lines import Line2D

    from simulation.scaling import single_device

    multi = [r for r in rows if not single_device(r)]
    rows = [r for r in rows if single_device(r)]
    if not rows and multi:
        n_min = min(int(float(r["devices"])) for r in multi)
        rows = [r for r in multi if int(float(r["devices"])) == n_min]
    data = _mean_over_seeds(rows)
    traces = list(dict.fromkeys(r["trace"] for r in rows))
    p_star = _p_star(bounds)
    v_policies = [p for p in V_STYLE if any(r["policy"] == p and r["V"] is not None for r in data)]
    fixed = [p for p in POINT_STYLE if any(r["policy"] == p for r in data)]
    others = sorted({r["policy"] for r in data} - set(v_policies) - set(fixed))

    ncols = min(3, max(1, len(traces)))
    nrows_top = math.ceil(len(traces) / ncols)
    extra = 1 if multi else 0
    fig = plt.figure(figsize=(5.3 * max(ncols, 3), 4.3 * (nrows_top + 1 + extra) + 1.2), constrained_layout=True)
    gs = fig.add_gridspec(nrows_top + 1 + extra, max(ncols, 3))

    # -- energy per frame vs mean latency, one panel per trace ---------------------------------
    for i, trace in enumerate(traces):
        ax = fig.add_subplot(gs[i // ncols, i % ncols])
        tr = [r for r in data if r["trace"] == trace]
        for p in v_policies:
            st = V_STYLE[p]
            pts = sorted((r for r in tr if r["policy"] == p and r["V"] is not None), key=lambda r: r["V"])
            good = [r for r in pts if r["serves"] and math.isfinite(r["energy_per_frame_j"])]
            bad = [r for r in pts if not r["serves"] and math.isfinite(r["energy_per_frame_j"])]
            if good:
                x = [r["latency_ms_mean"] / 1e3 for r in good]
                y = [r["energy_per_frame_j"] for r in good]
                ax.plot(x, y, color=st["color"], lw=st["lw"], ls=st["ls"], marker=st["marker"], ms=4 if p != "cutedge" else 5,
                        zorder=3 if p == "cutedge" else 2)
                if p == "cutedge":
                    _label_V(ax, good)
            if bad:
                ax.scatter([r["latency_ms_mean"] / 1e3 for r in bad], [r["energy_per_frame_j"] for r in bad],
                           facecolors="none", edgecolors=st["color"], marker="o", s=22, zorder=2)
        pts = [(p, r) for p in fixed + others for r in tr if r["policy"] == p and math.isfinite(r["energy_per_frame_j"])]
        for group in _coincident(pts):
            # baselines that land on the same point (edge-only and best-static often do) are
            # drawn side by side, largest first, and named together
            for j, (p, r) in enumerate(group):
                st = POINT_STYLE.get(p, dict(color="k", marker="x", label=p))
                x = r["latency_ms_mean"] / 1e3 * (1.0 + 0.09 * (j - (len(group) - 1) / 2))
                kw = dict(marker=st["marker"], s=110 if st["marker"] == "*" else 55, zorder=4 + j)
                if r["serves"]:
                    ax.scatter([x], [r["energy_per_frame_j"]], color=st["color"], edgecolors="k", linewidths=0.5, **kw)
                else:
                    ax.scatter([x], [r["energy_per_frame_j"]], facecolors="none", edgecolors=st["color"], linewidths=1.4, **kw)
            p0, r0 = group[0]
            name = " = ".join(SHORT.get(p, p) for p, _ in group)
            ax.annotate(name, (r0["latency_ms_mean"] / 1e3, r0["energy_per_frame_j"]), textcoords="offset points",
                        xytext=(8, -12), ha="left", fontsize=7, color="0.15")
        hs = sorted((h["latency_ms"] / 1e3, h["e_star_j_per_frame"]) for h in hindsight or ()
                    if h["trace"] == trace and math.isfinite(h["e_star_j_per_frame"]))
        if hs:
            ax.plot(*zip(*hs), color="tab:red", lw=1.4, ls="-", marker=".", ms=3, zorder=1)
        if trace in p_star:
            ax.axhline(p_star[trace], color="tab:red", ls=(0, (5, 3)), lw=1.2, zorder=1)
            ax.annotate(f"LP bound p* = {p_star[trace]:.3f} J", xy=(0.99, p_star[trace]), xycoords=("axes fraction", "data"),
                        ha="right", va="bottom", fontsize=8, color="tab:red")
        ax.set_xscale("log")
        ax.set_xlabel("mean latency, arrival to result (s, log scale)")
        ax.set_ylabel("device energy per frame (J)")
        ax.set_title(trace, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        _limits_from_serving(ax, tr, p_star.get(trace))

    # -- against V, averaged over traces ---------------------------------------------------------
    axE = fig.add_subplot(gs[nrows_top, 0])
    axL = fig.add_subplot(gs[nrows_top, 1])
    axT = fig.add_subplot(gs[nrows_top, 2])
    served_e, served_lat = [], []
    for p in v_policies:
        st = V_STYLE[p]
        Vs = sorted({r["V"] for r in data if r["policy"] == p and r["V"] is not None})
        e, lat, thr, ok = [], [], [], []
        for V in Vs:
            rs = [r for r in data if r["policy"] == p and r["V"] == V]
            e.append(_nanmean([r["energy_per_frame_j"] for r in rs]))
            lat.append(_nanmean([r["latency_ms_mean"] / 1e3 for r in rs]))
            thr.append(_nanmean([r["throughput_fps"] for r in rs]))
            ok.append(all(r["serves"] for r in rs))
        kw = dict(color=st["color"], lw=st["lw"], ls=st["ls"], marker=st["marker"], ms=4)
        for ax, y in ((axE, e), (axL, lat)):
            yg = [v if k else math.nan for v, k in zip(y, ok)]  # the line: runs that serve the load
            ax.plot(Vs, yg, **kw)
            bad = [(V, v) for V, v, k in zip(Vs, y, ok) if not k and math.isfinite(v)]
            if bad:
                ax.scatter(*zip(*bad), facecolors="none", edgecolors=st["color"], s=20)
        axT.plot(Vs, thr, **kw)
        served_e += [v for v, k in zip(e, ok) if k and math.isfinite(v)]
        served_lat += [v for v, k in zip(lat, ok) if k and math.isfinite(v)]
    if served_e:
        lo, hi = min(served_e + ([float(np.mean(list(p_star.values())))] if p_star else [])), max(served_e)
        axE.set_ylim(lo - 0.06 * (hi - lo or hi), hi + 0.06 * (hi - lo or hi))
    if served_lat:
        axL.set_ylim(min(served_lat) * 0.7, max(served_lat) * 2.5)
    if p_star:
        mean_p = float(np.mean(list(p_star.values())))
        axE.axhline(mean_p, color="tab:red", ls=(0, (5, 3)), lw=1.2)
        axE.annotate(f"LP bound p* (mean) = {mean_p:.3f} J", xy=(0.99, mean_p), xycoords=("axes fraction", "data"),
                     ha="right", va="bottom", fontsize=8, color="tab:red")
    offered = _nanmean([r["arrival_fps"] for r in data])
    if math.isfinite(offered):
        axT.axhline(offered, color="0.5", lw=4, alpha=0.35)
        axT.annotate(f"offered {offered:.1f} fps", xy=(0.02, offered), xycoords=("axes fraction", "data"), va="bottom",
                     fontsize=8, color="0.35")
    for p in fixed:
        st = POINT_STYLE[p]
        val = _nanmean([r["throughput_fps"] for r in data if r["policy"] == p])
        if math.isfinite(val):
            axT.axhline(val, color=st["color"], lw=1.0, ls=(0, (1, 2)))
            axT.plot([1.0], [val], transform=axT.get_yaxis_transform(), marker=st["marker"], color=st["color"],
                     clip_on=False, ms=7, markeredgecolor="k", markeredgewidth=0.5)
    for ax in (axE, axL, axT):
        ax.set_xscale("log")
        ax.set_xlabel("V (frames\u00b2/J, log scale)")
        ax.grid(alpha=0.3, which="both")
    axE.set_ylabel("energy per frame (J), mean over traces")
    axE.annotate("hollow: some trace falls behind", xy=(0.01, 0.99), xycoords="axes fraction", ha="left", va="top",
                 fontsize=7, color="0.35")
    axE.set_title("Energy falls as V grows (toward p*)", fontsize=10)
    axL.set_yscale("log")
    axL.set_ylabel("mean latency (s, log), mean over traces")
    axL.set_title("Latency (backlog) grows with V", fontsize=10)
    axT.set_ylabel("throughput (frames/s), mean over traces")
    axT.set_title("Throughput: V policies (lines), baselines (dotted)", fontsize=10)
    lo, hi = axT.get_ylim()
    axT.set_ylim(max(0.0, lo), hi * 1.05)

    if multi:
        _devices_row(fig, gs, nrows_top + 1, multi)
    for ax in fig.axes:
        _plain_log_ticks(ax)
    handles = [Line2D([], [], color=V_STYLE[p]["color"], lw=V_STYLE[p]["lw"], ls=V_STYLE[p]["ls"],
                      marker=V_STYLE[p]["marker"], label=V_STYLE[p]["label"] + " (curve over V)") for p in v_policies]
    handles += [Line2D([], [], color=POINT_STYLE[p]["color"], marker=POINT_STYLE[p]["marker"], ls="none", ms=8,
                       markeredgecolor="k", markeredgewidth=0.5, label=POINT_STYLE[p]["label"]) for p in fixed]
    if hindsight:
        handles.append(Line2D([], [], color="tab:red", lw=1.4, marker=".", label="hindsight bound E*(L)"))
    handles += [Line2D([], [], color="tab:red", ls=(0, (5, 3)), label="stationary LP bound p*"),
                Line2D([], [], color="0.3", marker="o", mfc="none", ls="none",
                       label="hollow: drops frames or falls behind the camera")]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(4, len(handles)), fontsize=9, frameon=False)
    if title:
        fig.suptitle(title, fontsize=12)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _devices_row(fig, gs, row: int, rows: list[dict]) -> None:
    """Latency, energy per frame and edge utilisation against the device count N (means over
    traces and seeds); the controller one line per V (darker: larger V), the others one each."""
    from simulation.scaling import stable

    groups: dict[tuple[str, float | None], dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        V = None if r.get("V") in (None, "") else float(r["V"])
        groups[(r["policy"], V)][int(float(r["devices"]))].append(r)
    axes = [fig.add_subplot(gs[row, i]) for i in range(3)]
    keys = ("latency_ms_mean", "energy_per_frame_j", "edge_utilisation")
    cut_Vs = sorted(V for p, V in groups if p == "cutedge" and V is not None)
    for (policy, V), by_n in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0.0)):
        if policy in V_STYLE and policy != "cutedge":
            continue  # the ablations: the controller's lines carry the story here
        ns = sorted(by_n)
        if policy == "cutedge":
            shade = 0.15 + 0.7 * (1.0 - (cut_Vs.index(V) / max(1, len(cut_Vs) - 1)))
            kw = dict(color=str(round(shade * 0.8, 3)), lw=2.0, marker="o", ms=4, label=f"CutEdge V = {V:g}")
        else:
            st = POINT_STYLE.get(policy, dict(color="0.5", marker="x", label=policy))
            kw = dict(color=st["color"], lw=1.3, ls="--", marker=st["marker"], ms=5, label=st["label"])
        unstable = [not all(stable(r) for r in by_n[n]) for n in ns]
        for ax, key in zip(axes, keys):
            y = [_nanmean([float(r[key]) if r.get(key) not in (None, "") else math.nan for r in by_n[n]]) for n in ns]
            ax.plot(ns, y, **kw)
            bad = [(n, v) for n, v, u in zip(ns, y, unstable) if u and math.isfinite(v)]
            if bad:
                ax.scatter(*zip(*bad), facecolors="none", edgecolors=kw["color"], s=70, lw=1.2, zorder=4)
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("devices sharing the edge (N, log scale)")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("mean latency (ms, log), mean over traces")
    axes[0].set_title("Latency against N (ringed: the edge's backlog grows)", fontsize=10)
    axes[1].set_ylabel("device energy per frame (J)")
    axes[1].set_title("Energy per frame against N", fontsize=10)
    axes[2].set_ylabel("edge utilisation")
    axes[2].set_ylim(0.0, 1.05)
    axes[2].axhline(1.0, color="0.5", lw=1.0, ls=":")
    axes[2].set_title("Edge utilisation against N", fontsize=10)
    axes[2].legend(fontsize=7, loc="upper left", frameon=False)


def _label_V(ax, pts: list[dict]) -> None:
    """Write V beside the controller's points at V = 1, 10, 100, ... (the first of each decade)."""
    shown = set()
    for r in pts:
        V = r["V"]
        if V < 1.0:
            continue
        dec = math.floor(math.log10(V))
        if dec in shown:
            continue
        shown.add(dec)
        ax.annotate(f"V={V:g}", (r["latency_ms_mean"] / 1e3, r["energy_per_frame_j"]), textcoords="offset points",
                    xytext=(3, 6), fontsize=7, color="0.1")


def _limits_from_serving(ax, rows: list[dict], p_star: float | None) -> None:
    """Axis limits that frame the runs serving the load (and p*); runs that fall behind can
    have latencies of minutes and energies per frame of several J, which would squash the
    informative part. Those left outside are counted in the corner."""
    good = [r for r in rows if r["serves"] and math.isfinite(r["energy_per_frame_j"]) and math.isfinite(r["latency_ms_mean"])]
    if not good:
        return
    ys = [r["energy_per_frame_j"] for r in good] + ([p_star] if p_star is not None and math.isfinite(p_star) else [])
    xs = [r["latency_ms_mean"] / 1e3 for r in good]
    ylo, yhi = min(ys), max(ys)
    pad = 0.06 * (yhi - ylo or yhi)
    ylo, yhi = ylo - pad, yhi + pad
    xlo, xhi = min(xs) * 0.7, max(xs) * 2.5
    ax.set_ylim(ylo, yhi)
    ax.set_xlim(xlo, xhi)
    off = [r for r in rows if math.isfinite(r["energy_per_frame_j"]) and math.isfinite(r["latency_ms_mean"])
           and not (ylo <= r["energy_per_frame_j"] <= yhi and xlo <= r["latency_ms_mean"] / 1e3 <= xhi)]
    if off:
        names = sorted({r["policy"] if r["V"] is None else f"{r['policy']} (V={r['V']:g})" for r in off})
        text = ", ".join(names[:3]) + (f" +{len(names) - 3}" if len(names) > 3 else "")
        ax.annotate(f"off scale (fall behind): {text}", xy=(0.99, 0.99), xycoords="axes fraction", ha="right", va="top",
                    fontsize=6.5, color="0.35")


def _plain_log_ticks(ax) -> None:
    """Log axes read 0.1, 1, 10 (not 10^-1, 10^0, 10^1); short ones get 1-2-5 ticks."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    fmt = FuncFormatter(lambda v, _: f"{v:g}")
    for axis, scale, lim in ((ax.xaxis, ax.get_xscale(), ax.get_xlim()), (ax.yaxis, ax.get_yscale(), ax.get_ylim())):
        if scale == "log":
            decades = math.log10(max(lim) / max(min(lim), 1e-300))
            if decades < 2.5:  # a short axis gets 1-2-5 ticks, or it may show a single label
                axis.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(fmt)
            axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def _nanmean(vals) -> float:
    a = np.asarray([v for v in vals if v is not None], dtype=float)
    return float(np.nanmean(a)) if a.size and np.isfinite(a).any() else math.nan


__all__ = ["plot_tradeoff"]
