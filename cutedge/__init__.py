"""The ``cutedge`` command (``cutedge.cli``) and its subcommands (``cutedge.commands``)."""

#: the one place the version is written: pyproject.toml reads it, ``cutedge --version`` shows it
__version__ = "0.1.0"
