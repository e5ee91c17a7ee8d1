"""A tiny CNN with a skip connection, for serving real tails quickly in tests.

The residual block makes some cuts carry two tensors, so multi-tensor requests are exercised.
Imported by the edge subprocess as ``edge_tinynet:tiny_net`` (the test puts this folder on
PYTHONPATH) and by the tests themselves to run the same tails locally.
"""

from __future__ import annotations

import torch
from torch import nn

INPUT_SHAPE = (3, 16, 16)
MODEL = "edge_tinynet:tiny_net"


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        y = torch.relu(self.conv1(x))
        y = self.conv2(y)
        x = torch.relu(x + y)
        return self.fc(torch.flatten(self.pool(x), 1))


def tiny_net() -> nn.Module:
    return TinyNet()
