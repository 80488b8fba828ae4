"""VGG-16 (configuration "D", 13 convolutions) behind the same name-addressed ``extract`` as ``nets/vgg.py``'s VGG-19,
and the choice between them for the perceptual losses of the fast style networks.

Johnson et al. and Dumoulin et al. computed their losses with VGG-16. It is used when ``--vgg_weights`` gives a file
in torchvision's ``vgg16`` layout (``features.0.weight`` .. ``features.28.weight``; e.g. ``vgg16-397923af.pth``);
otherwise the losses use VGG-19 (``build_vgg19``: its search, its kinds), where the layers the papers name (relu1_2,
relu2_2, relu3_3, relu4_3) exist under the same names. The network's ``arch`` says which one was built.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from gan_translate.errors import UserError
from gan_translate.nets.vgg import RANDOM_WEIGHTS, VGG19, _read_file, build_vgg19, run_features
from gan_translate.nets.vgg_weights import imagenet_map

__all__ = ["VGG16", "VGG16_CONV_INDEX", "VGG16_LAYER_NAMES", "build_perceptual_vgg", "is_vgg16_state"]

_BLOCKS16 = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


def _table() -> list[tuple[str, str, int]]:
    table = []
    for block, (channels, convs) in enumerate(_BLOCKS16, start=1):
        for i in range(1, convs + 1):
            table += [(f"conv{block}_{i}", "conv", channels), (f"relu{block}_{i}", "relu", channels)]
        table.append((f"pool{block}", "pool", channels))
    return table


_TABLE16 = _table()
VGG16_LAYER_NAMES = tuple(name for name, _, _ in _TABLE16)
_INDEX16 = {name: i for i, name in enumerate(VGG16_LAYER_NAMES)}
VGG16_CONV_INDEX = tuple(i for i, (_, kind, _) in enumerate(_TABLE16) if kind == "conv")  # 0, 2, 5, ..., 28


class VGG16(nn.Module):
    """The convolutional part of torchvision's VGG-16 up to ``last_layer``, activations readable by name; inputs are
    platform images in [-1, 1] (ImageNet normalisation inside), as ``VGG19``."""

    arch = "vgg16"

    def __init__(self, *, last_layer: str = "relu4_3") -> None:
        super().__init__()
        self._check([last_layer], "last_layer")
        self.last_layer = last_layer
        layers: list[nn.Module] = []
        in_channels = 3
        for _, kind, channels in _TABLE16[: _INDEX16[last_layer] + 1]:
            if kind == "conv":
                layers.append(nn.Conv2d(in_channels, channels, 3, padding=1))
                in_channels = channels
            elif kind == "relu":
                layers.append(nn.ReLU(inplace=False))
            else:
                layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.weights_kind, self.weights_source = "torchvision", ""
        weight, bias = imagenet_map()
        self.register_buffer("input_weight", weight.view(3, 3, 1, 1), persistent=False)
        self.register_buffer("input_bias", bias, persistent=False)

    @staticmethod
    def _check(layers: Iterable[str], option: str = "layers") -> list[str]:
        layers = list(layers)
        for name in layers:
            if name not in _INDEX16:
                raise UserError(f"option --{option}: unknown VGG-16 layer '{name}' (conv1_1..relu5_3, pool1..pool5)")
        return layers

    def extract(self, x: torch.Tensor, layers: Iterable[str]) -> dict[str, torch.Tensor]:
        wanted = {_INDEX16[name]: name for name in self._check(layers)}
        if not wanted:
            return {}
        h = torch.nn.functional.conv2d(x, self.input_weight.to(x.dtype), self.input_bias.to(x.dtype))
        return run_features(self.features, h, wanted, self.last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.extract(x, [self.last_layer])[self.last_layer]


def _conv_keys(state: Mapping[str, torch.Tensor]) -> list[int]:
    """Indices i of 4-D ``features.i.weight`` tensors (the convolutions of a torchvision VGG)."""
    found = []
    for key, value in state.items():
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == "features" and parts[2] == "weight" and parts[1].isdigit() \
                and value.dim() == 4:
            found.append(int(parts[1]))
    return sorted(found)


def is_vgg16_state(state: Mapping[str, torch.Tensor]) -> bool:
    """A torchvision-style VGG state dict with 13 convolutions (VGG-16, with or without batch norm)."""
    return len(_conv_keys(state)) == 13


def _load_vgg16(state: Mapping[str, torch.Tensor], source: str, last_layer: str) -> VGG16:
    convs = tuple(_conv_keys(state))
    if convs != VGG16_CONV_INDEX:
        hint = " (VGG-16 with batch norm?)" if any(k.endswith("running_mean") for k in state) else ""
        raise UserError(f"option --vgg_weights: {source} has 13 convolutions at features.{convs[0]}..{convs[-1]}, "
                        f"not torchvision's VGG-16 layout (features.0..28){hint}")
    net = VGG16(last_layer=last_layer)
    own = net.features.state_dict()
    for key, tensor in own.items():
        value = state.get(f"features.{key}")
        if value is None or tuple(value.shape) != tuple(tensor.shape):
            shape = "missing" if value is None else f"shape {tuple(value.shape)}"
            raise UserError(f"option --vgg_weights: {source}: 'features.{key}' is {shape}; torchvision's VGG-16 "
                            f"needs {tuple(tensor.shape)}")
    net.features.load_state_dict({k: state[f"features.{k}"].float() for k in own})
    net.weights_source = source
    return net.requires_grad_(False).eval()


def build_perceptual_vgg(weights: str | os.PathLike | None, *, kind: str = "auto", last_layer: str = "relu4_3",
                         seed: int = 0) -> nn.Module:
    """VGG-16 when ``weights`` is a torchvision VGG-16 file, else ``build_vgg19`` (``kind``, its search); frozen, eval.

    The result has ``arch`` ("vgg16" or "vgg19"), ``weights_kind`` and ``weights_source``.
    """
    if weights and str(weights) != RANDOM_WEIGHTS:
        path = Path(weights).expanduser()
        if path.is_file():
            state = _read_file(path)
            if is_vgg16_state(state):
                if kind not in ("auto", "torchvision"):
                    raise UserError(f"option --vgg_weights: {path} is torchvision's VGG-16, but {kind} weights are "
                                    "needed (the run was trained with those)")
                return _load_vgg16(state, str(path), last_layer)
    net: VGG19 = build_vgg19(weights, last_layer=last_layer, seed=seed, kind=kind)
    net.arch = "vgg19"  # type: ignore[attr-defined]
    return net
