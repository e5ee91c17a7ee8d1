"""``cutedge keys``: make a CURVE key pair for an agent.

Each side makes its own pair and hands out only the public half: the edge's ``NAME.key`` goes to
every device (``cutedge device run --curve-server-key``, with the device's own ``.key_secret`` as
``--curve-client-secret``), each device's ``NAME.key`` goes into the edge's ``--curve-clients``
folder. Secret files are written mode 0600 and never overwritten silently.
"""

from __future__ import annotations

from pathlib import Path

import click

from cutedge.cli import UsageFailure


@click.command("keys")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write NAME.key (public) and NAME.key_secret (secret) into; made if missing.",
)
@click.option(
    "--name", default="cutedge", show_default=True, help="Base name of the two key files."
)
@click.option("--force", is_flag=True, help="Replace existing key files of that name.")
def keys(out_dir: Path, name: str, force: bool) -> None:
    """Make a CURVE key pair (ZeroMQ certificate files) for the edge or a device."""
    import zmq

    from wire.curve import KeyFileError, make_key_pair

    if not zmq.has("curve"):
        raise UsageFailure(
            "this libzmq was built without CURVE support (zmq.has('curve') is False)"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageFailure(f"--out {out_dir}: exists and is not a folder")
    try:
        public, secret = make_key_pair(out_dir, name, overwrite=force)
    except KeyFileError as exc:
        raise UsageFailure(str(exc)) from None
    except OSError as exc:
        raise UsageFailure(f"--out {out_dir}: cannot write key files: {exc.strerror}") from None
    click.echo(f"public key: {public}  (give this file to the peers)")
    click.echo(f"secret key: {secret}  (keep it here; mode 0600)")
