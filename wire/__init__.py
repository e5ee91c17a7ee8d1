"""The wire format both agents share: how tensors and replies travel between device and edge.

- ``wire.format``: the fixed binary header (``struct``), message types, error codes, limits and
  every check a receiver runs before it touches a buffer. No torch, no zmq.
- ``wire.tensors``: torch tensors to zero-copy buffers and back.
- ``wire.transport``: multipart send/receive over ZeroMQ and :class:`EdgeClient`, the client the
  device agent uses to reach the edge agent.
- ``wire.curve``: CURVE key files (make, load, check) and applying them to sockets.
- ``wire.echo``: an echo server built from this code (transport benchmark and tests).

The byte layout is documented in ``docs/wire-format.md``.
"""

from wire.format import (
    Catalog,
    ErrorCode,
    Header,
    Limits,
    MsgType,
    TensorDesc,
    TensorSpec,
    WireError,
)

__all__ = [
    "Catalog",
    "ErrorCode",
    "Header",
    "Limits",
    "MsgType",
    "TensorDesc",
    "TensorSpec",
    "WireError",
]
