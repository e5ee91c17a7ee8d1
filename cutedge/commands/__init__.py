"""The ``cutedge`` subcommands, one module each, and the options several of them share."""

from __future__ import annotations

import click


def _check_edge_profile(ctx, param, value):
    """``--edge``: a configs/edges name or a path, loaded and checked before anything runs."""
    if value is None:
        return None
    from controller.config import ConfigError
    from cutedge.cli import UsageFailure
    from simulation.edge import load_edge

    try:
        load_edge(value)
    except ConfigError as exc:
        raise UsageFailure(f"--edge: {exc}") from None
    return value


edge_profile_option = click.option(
    "--edge", "edge_profile", default=None, callback=_check_edge_profile,
    help="The shared edge's profile (configs/edges name or a path; default with >1 device: agx-orin-fp32).",
)
"""``--edge PROFILE`` of ``cutedge simulate`` and ``cutedge sweep`` (docs/devices.md)."""
