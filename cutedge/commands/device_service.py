"""``cutedge device service``: a systemd unit that runs the device agent on the board.

The unit runs ``cutedge device run`` with the arguments given after ``--`` as a normal user in
the group the udev rule lets write the GPU devfreq files (``cutedge``, docs/device-backends.md),
comes back after a crash (``Restart=on-failure``) and a reboot (``WantedBy=multi-user.target``),
and after every stop runs ``cutedge device restore``, which puts the GPU clock back if the agent
died without doing so (SIGKILL, the OOM killer). The clock state lives in ``/run/cutedge``, which
systemd creates for the unit's user (``RuntimeDirectory=``) and keeps across restarts.
"""

from __future__ import annotations

import getpass
import os
import re
import sys
from pathlib import Path

import click

from cutedge.cli import UsageFailure

#: the group of the udev rule in docs/device-backends.md
DEFAULT_GROUP = "cutedge"
_NAME = re.compile(r"^[a-z_][a-z0-9_-]*[$]?$")  # useradd's portable user and group names
_UNIT = re.compile(r"^[A-Za-z0-9:_.\\-]+$")


def quote_arg(arg: str) -> str:
    """One command-line word as systemd's ``ExecStart=`` reads it: ``%`` and ``$`` would be
    expanded (specifiers, variables), quotes and backslashes are escapes."""
    text = arg.replace("%", "%%").replace("$", "$$")
    if text and not re.search(r"[\s\"'\\;]", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def exec_line(argv: list[str]) -> str:
    return " ".join(quote_arg(a) for a in argv)


def render_unit(
    *,
    python: str,
    run_args: list[str],
    user: str,
    group: str,
    working_dir: str,
    description: str = "cutedge device agent (split inference; GPU clock set by the controller)",
    restart_s: float = 5.0,
) -> str:
    """The text of the unit file (see the module docstring for what each part is for)."""
    cutedge = [python, "-m", "cutedge"]
    lines = [
        "# written by `cutedge device service`; install:",
        "#   sudo cp THIS /etc/systemd/system/ && sudo systemctl daemon-reload",
        "#   sudo systemctl enable --now UNIT",
        "[Unit]",
        f"Description={description}",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=exec",
        f"User={user}",
        f"Group={group}",
        f"WorkingDirectory={working_dir}",
        # the clock state (device_agent/clock/state.py): created for User, kept across restarts
        # so that a restore that failed can be retried by the next start
        "RuntimeDirectory=cutedge",
        "RuntimeDirectoryMode=0700",
        "RuntimeDirectoryPreserve=restart",
        "Environment=CUTEDGE_RUNTIME_DIR=/run/cutedge",
        "Environment=PYTHONUNBUFFERED=1",
        f"ExecStart={exec_line(cutedge + ['device', 'run', *run_args])}",
        # runs after every stop, also after SIGKILL: puts the clock back if the agent did not
        f"ExecStopPost={exec_line(cutedge + ['device', 'restore'])}",
        "Restart=on-failure",
        f"RestartSec={restart_s:g}",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=30",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines)


def _check_run_args(run_args: list[str]) -> None:
    """Parse the arguments as `device run` would, so a typo fails here, not at boot."""
    from cutedge.commands.device_run import check_edges, run

    try:
        ctx = run.make_context("cutedge device run", list(run_args))
    except click.exceptions.Exit:  # --help among them
        raise UsageFailure(
            "device run arguments: --help is not an argument for a service"
        ) from None
    except click.ClickException as exc:
        raise UsageFailure(f"device run arguments: {exc.format_message()}") from None
    try:
        check_edges(ctx.params["edge_endpoint"])
    except ValueError as exc:
        raise UsageFailure(f"device run arguments: {exc}") from None


@click.command("service", context_settings={"ignore_unknown_options": True})
@click.option(
    "--user",
    default=None,
    metavar="NAME",
    help="User the agent runs as (default: $SUDO_USER, else you); not root.",
)
@click.option(
    "--group",
    default=DEFAULT_GROUP,
    show_default=True,
    metavar="NAME",
    help="Group that may write the GPU devfreq files (the udev rule's group).",
)
@click.option(
    "--working-dir",
    default=None,
    metavar="DIR",
    help="Folder the agent runs in; relative paths in its arguments start here "
    "(default: this folder).",
)
@click.option(
    "--out",
    default="-",
    show_default=True,
    metavar="FILE",
    help="Where to write the unit (a name ending in .service; - for stdout).",
)
@click.argument("run_args", nargs=-1, type=click.UNPROCESSED, metavar="-- DEVICE_RUN_ARGS...")
def service(
    user: str | None, group: str, working_dir: str | None, out: str, run_args: tuple[str, ...]
) -> None:
    """Write a systemd unit that runs `cutedge device run DEVICE_RUN_ARGS` as a service.

    The agent runs as --user in --group (default cutedge, the group of the udev rule in
    docs/device-backends.md, so it may set the GPU clock without root), restarts on failure,
    starts at boot, and `cutedge device restore` runs after every stop to put the GPU clock back
    if the agent died without doing so. Example:

    \b
        cutedge device service --out cutedge-device.service -- --edge tcp://10.0.0.2:5555
        --model resnet50 --backend sysfs --board jetson-orin-nano --duration 86400
    """
    args = list(run_args)
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        raise UsageFailure(
            "give the `device run` arguments after --, e.g. -- --edge tcp://HOST:5555"
        )
    user = user or os.environ.get("SUDO_USER") or getpass.getuser()
    for option, value in (("--user", user), ("--group", group)):
        if not _NAME.match(value):
            raise UsageFailure(f"{option}: not a valid user or group name: {value!r}")
    if user == "root":
        raise UsageFailure(
            "--user: the agent should not run as root; give the user in group "
            f"{group!r} (docs/device-backends.md, udev rule) with --user NAME"
        )
    _check_run_args(args)
    wd = Path(working_dir) if working_dir is not None else Path.cwd()
    if not wd.is_dir():
        raise UsageFailure(f"--working-dir: {wd} is not a directory")
    text = render_unit(
        python=os.path.abspath(sys.executable),
        run_args=args,
        user=user,
        group=group,
        working_dir=str(wd.resolve()),
    )
    if out == "-":
        click.echo(text, nl=False)
        return
    path = Path(out)
    if path.suffix != ".service" or not _UNIT.match(path.name):
        raise UsageFailure(f"--out: a unit file name must end in .service, got {path.name!r}")
    try:
        path.write_text(text)
    except OSError as exc:
        raise UsageFailure(f"--out: cannot write {path}: {exc.strerror or exc}") from None
    click.echo(
        f"wrote {path}; install it with: sudo cp {path} /etc/systemd/system/ && "
        f"sudo systemctl daemon-reload && sudo systemctl enable --now {path.name}"
    )
