"""TinyNet with a hook that holds one tail call forever, so a test can kill the process running
it mid-request (a pool replica, found by the PID the hook writes).

``stall_once`` is a leaf of the traced graph (``torch.fx.wrap``), so it runs in every tail (it is
the model's last step) and not at trace time. It does nothing unless ``$CUTEDGE_TEST_STALL_DIR``
names a folder holding a file ``armed``; then the first call in any process to create
``claimed`` there (``O_EXCL``: exactly one wins) writes its PID into it, and blocks until that
process is killed. Every other call, and every call once ``claimed`` exists, passes its input
through. Arm it only after the edge is up: building a partition runs the model once.

Same weights as ``edge_tinynet:tiny_net`` for a seed (same layers, built in the same order).
"""

from __future__ import annotations

import os
import time

import torch
import torch.fx
from edge_tinynet import INPUT_SHAPE, TinyNet

__all__ = ["INPUT_SHAPE", "MODEL", "STALL_ENV", "stall_net"]

MODEL = "edge_stallnet:stall_net"
STALL_ENV = "CUTEDGE_TEST_STALL_DIR"


def stall_once(x: torch.Tensor) -> torch.Tensor:
    folder = os.environ.get(STALL_ENV)
    if not folder or not os.path.exists(os.path.join(folder, "armed")):
        return x
    try:
        fd = os.open(os.path.join(folder, "claimed"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return x
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{os.getpid()}\n")
    while True:  # held until this process is killed
        time.sleep(1.0)


torch.fx.wrap("stall_once")


class StallNet(TinyNet):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        y = torch.relu(self.conv1(x))
        y = self.conv2(y)
        x = torch.relu(x + y)
        return stall_once(self.fc(torch.flatten(self.pool(x), 1)))


def stall_net() -> torch.nn.Module:
    return StallNet()
