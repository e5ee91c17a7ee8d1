"""Small models for the dnn_split tests, importable as ``tiny_split_models:FACTORY``.

They exercise what torchvision models do not all have: a parameter used directly in forward
(an fx ``get_attr``), a tuple output, control flow fx cannot trace, and a builder that tries to
download weights.
"""

from __future__ import annotations

import torch
from torch import nn


class TinyNet(nn.Module):
    """conv stem, a branch joined back by a scaled skip connection, pooling, linear."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU()
        )
        self.branch = nn.Conv2d(8, 8, 3, padding=1)
        self.scale = nn.Parameter(torch.full((1, 8, 1, 1), 0.5))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        x = self.stem(x)
        y = torch.relu(self.branch(x))
        x = x + y * self.scale
        return self.fc(self.pool(x).flatten(1))


class TwoHeads(TinyNet):
    """Returns (logits, pooled features): the tail must rebuild the same structure."""

    def forward(self, x):
        x = self.stem(x)
        x = x + torch.relu(self.branch(x)) * self.scale
        feats = self.pool(x).flatten(1)
        return self.fc(feats), feats


class Gate(nn.Module):
    def forward(self, x):
        if x.mean() > 0:  # data-dependent control flow: fx cannot trace this
            return x
        return -x


class GatedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.post = nn.Sequential(nn.ReLU(), Gate())

    def forward(self, x):
        return self.post(self.conv(x))


def tiny() -> nn.Module:
    return TinyNet()


def two_heads() -> nn.Module:
    return TwoHeads()


def untraceable() -> nn.Module:
    return GatedNet()


def downloading() -> nn.Module:
    torch.hub.load_state_dict_from_url("https://example.invalid/weights.pth")
    return TinyNet()


not_a_module = 42
