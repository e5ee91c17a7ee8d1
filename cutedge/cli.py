"""The ``cutedge`` command: one entry point, subcommands loaded on demand.

Each subcommand lives in its own module under ``cutedge/commands/`` and is imported only when it
runs, so ``cutedge simulate`` never pulls in torch or zmq. Expected failures (bad config, bad
trace, bad argument, missing permission) print one ``error:`` line and exit non-zero; only a bug
shows a traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import click

from cutedge import __version__

# name -> "module:attribute" of a click command
SUBCOMMANDS: dict[str, str] = {
    "simulate": "cutedge.commands.simulate:simulate",
    "sweep": "cutedge.commands.sweep:sweep",
    "plot": "cutedge.commands.plot:plot",
    "profile": "cutedge.commands.profile:profile",
    "device": "cutedge.commands.device:device",
    "edge": "cutedge.commands.edge:edge",
    "keys": "cutedge.commands.keys:keys",
}

SHORT_HELP: dict[str, str] = {
    "simulate": "Trace-driven simulation of the controller on one board, model and trace.",
    "sweep": "Sweep V and policies over traces; write sweep.csv, bound.csv, tradeoff.png.",
    "plot": "Redraw the trade-off figures from a sweep folder.",
    "profile": "Partition a PyTorch model and profile every cut (needs torch).",
    "device": "GPU clock and power (info, clock, restore), the device agent (run, service).",
    "edge": "Run the edge agent (ZeroMQ server running DNN tails).",
    "keys": "Make CURVE key pairs for the agents.",
}


class UsageFailure(click.ClickException):
    """An expected failure: printed as one line, exit status 2."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in SUBCOMMANDS if self._available(name)]

    @staticmethod
    def _available(name: str) -> bool:
        module = SUBCOMMANDS[name].split(":")[0]
        return importlib.util.find_spec(module) is not None

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in SUBCOMMANDS or not self._available(name):
            return None
        module, attr = SUBCOMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, SHORT_HELP.get(name, "")) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cutedge")
def cli() -> None:
    """cutedge: energy-aware split inference on Jetson-class boards.

    Every slot a Lyapunov drift-plus-penalty controller picks the DNN split point, the GPU clock
    and the uplink rate; V trades device energy against backlog and latency.
    """


def main(argv: list[str] | None = None) -> int:
    from controller.config import ConfigError

    try:
        cli.main(args=argv, prog_name="cutedge", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
