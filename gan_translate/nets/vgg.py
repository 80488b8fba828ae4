"""VGG-19 feature extractor addressed by layer name, and the ImageNet weights it needs.

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition", ICLR 2015. Style transfer
(Gatys et al. 2016; Li & Wand 2016; Li et al. 2017; Huang & Belongie 2017) reads the activations of this network by
name: ``conv1_1``, ``relu1_1``, ``conv1_2``, ..., ``pool1``, ..., ``relu5_4``, ``pool5``.

Conventions:
- Inputs are platform images: float RGB in [-1, 1]. The ImageNet normalisation that torchvision's weights expect
  (``(x01 - mean) / std`` with x01 in [0, 1]) happens inside, so callers never normalise.
- Only the convolutional part exists (the classifier is never used), and only up to ``last_layer``.
- The layers keep torchvision's indices (``features.<i>.weight``), so torchvision's state dict loads as it is.

Weights, in this order (``load_vgg19_state``): a file given as ``--vgg_weights FILE`` (torchvision's
``vgg19-dcbb9e9d.pth`` or a safetensors file of the same keys), torchvision's cache
(``$TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth``), a download when online (548 MB). With none of them: a one-line
``UserError``. ``weights="random"`` builds the same network with seeded random weights, for tests and debugging only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

import torch
from torch import nn

from gan_translate.errors import UserError

__all__ = [
    "LAYER_NAMES",
    "VGG19",
    "VGG19_FILE",
    "VGG19_URL",
    "build_vgg19",
    "check_layers",
    "load_vgg19_state",
    "vgg19_cache_path",
]

# Output channels of each block's convolutions (VGG-19 = configuration "E" of the paper).
_BLOCKS: tuple[tuple[int, int], ...] = ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4))
VGG19_FILE = "vgg19-dcbb9e9d.pth"
VGG19_URL = "https://download.pytorch.org/models/" + VGG19_FILE
RANDOM_WEIGHTS = "random"
# Set to 1 to forbid the download (tests, air-gapped machines): a missing file is then reported at once.
OFFLINE_ENV = "GAN_TRANSLATE_OFFLINE"

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _layer_table() -> list[tuple[str, str, int]]:
    """(name, kind, channels) of every layer of ``features``, in torchvision's order."""
    table: list[tuple[str, str, int]] = []
    for block, (channels, convs) in enumerate(_BLOCKS, start=1):
        for i in range(1, convs + 1):
            table.append((f"conv{block}_{i}", "conv", channels))
            table.append((f"relu{block}_{i}", "relu", channels))
        table.append((f"pool{block}", "pool", channels))
    return table


_TABLE = _layer_table()
LAYER_NAMES: tuple[str, ...] = tuple(name for name, _, _ in _TABLE)
_INDEX = {name: i for i, name in enumerate(LAYER_NAMES)}
_CHANNELS = {name: channels for name, _, channels in _TABLE}


def check_layers(layers: Iterable[str], option: str = "layers") -> list[str]:
    """The names as a list; an unknown name is a one-line UserError naming ``option``."""
    layers = list(layers)
    for name in layers:
        if name not in _INDEX:
            raise UserError(f"option --{option}: unknown VGG-19 layer '{name}' (conv1_1..relu5_4, pool1..pool5)")
    return layers


_POOLS: dict[str, type[nn.Module]] = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}
_PADDINGS = ("zeros", "reflect")


class VGG19(nn.Module):
    """The convolutional part of VGG-19 up to ``last_layer``, with activations readable by name.

    Args:
        last_layer: the deepest layer built (the rest of the network is not created).
        pool: "max" (the trained network) or "avg" (Gatys et al. 2016: average pooling gives smoother gradients).
        padding: "zeros" (as trained) or "reflect" (Huang & Belongie's AdaIN encoder: no dark border artefacts).
    """

    def __init__(self, *, last_layer: str = "pool5", pool: str = "max", padding: str = "zeros") -> None:
        super().__init__()
        check_layers([last_layer], "last_layer")
        if pool not in _POOLS:
            raise ValueError(f"pool must be one of {sorted(_POOLS)}, got {pool!r}")
        if padding not in _PADDINGS:
            raise ValueError(f"padding must be one of {_PADDINGS}, got {padding!r}")
        self.last_layer = last_layer
        layers: list[nn.Module] = []
        in_channels = 3
        for name, kind, channels in _TABLE[: _INDEX[last_layer] + 1]:
            if kind == "conv":
                layers.append(nn.Conv2d(in_channels, channels, 3, padding=1, padding_mode=padding))
                in_channels = channels
            elif kind == "relu":
                layers.append(nn.ReLU(inplace=False))  # in place would overwrite the conv output a caller asked for
            else:
                layers.append(_POOLS[pool](kernel_size=2, stride=2))
        self.features = nn.Sequential(*layers)
        # [-1, 1] -> ImageNet-normalised in one affine map: (x + 1) / 2 then (x01 - mean) / std.
        std = torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1)
        mean = torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1)
        self.register_buffer("scale", 0.5 / std, persistent=False)
        self.register_buffer("shift", (0.5 - mean) / std, persistent=False)

    @staticmethod
    def channels(layer: str) -> int:
        """Channels of the activation ``layer``."""
        return _CHANNELS[check_layers([layer])[0]]

    def extract(self, x: torch.Tensor, layers: Iterable[str]) -> dict[str, torch.Tensor]:
        """Activations of ``layers`` for images ``x`` (N, 3, H, W) in [-1, 1]; runs only as deep as needed.

        Raises:
            UserError: a name that is not a VGG-19 layer; ValueError: a layer deeper than ``last_layer``.
        """
        wanted = {_INDEX[name]: name for name in check_layers(layers)}
        if not wanted:
            return {}
        deepest = max(wanted)
        if deepest >= len(self.features):
            raise ValueError(f"layer {wanted[deepest]} is deeper than this network's last layer {self.last_layer}")
        out: dict[str, torch.Tensor] = {}
        h = x * self.scale + self.shift
        for i in range(deepest + 1):
            h = self.features[i](h)
            if i in wanted:
                out[wanted[i]] = h
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The activation of ``last_layer``."""
        return self.extract(x, [self.last_layer])[self.last_layer]


# ----------------------------------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------------------------------


def vgg19_cache_path() -> Path:
    """Where torchvision keeps the downloaded weights (honours ``TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE


def _missing_message() -> str:
    return (f"no VGG-19 weights: pass --vgg_weights FILE or run once online to download them to "
            f"{vgg19_cache_path()} (548 MB from download.pytorch.org)")


def _read_file(path: Path) -> Mapping[str, torch.Tensor]:
    """A state dict from a .pth (weights only: no code runs) or a .safetensors file."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any failure to parse the file is the user's file, not our bug
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"option --vgg_weights: cannot read {path} ({reason[:200]})") from None
    if not isinstance(state, Mapping):
        raise UserError(f"option --vgg_weights: {path} does not hold a state dict")
    return state


def _download() -> Mapping[str, torch.Tensor]:
    """torchvision's download (into its cache, hash-checked), as ``vgg19(weights=IMAGENET1K_V1)`` does."""
    from torchvision.models import VGG19_Weights

    return VGG19_Weights.IMAGENET1K_V1.get_state_dict(progress=True, check_hash=True, weights_only=True)


def load_vgg19_state(weights: str | os.PathLike | None = None) -> Mapping[str, torch.Tensor]:
    """The ImageNet VGG-19 state dict: from ``weights`` (a file), else the torchvision cache, else a download.

    Raises:
        UserError: the file is missing or unreadable, or no weights are available (one line saying how to get them).
    """
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise UserError(f"option --vgg_weights: file not found: {path}")
        return _read_file(path)
    cached = vgg19_cache_path()
    if cached.is_file():
        return _read_file(cached)
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        raise UserError(_missing_message())
    try:
        return _download()
    except Exception as err:  # offline, proxy, disk full, bad hash: all mean "no weights here"
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise UserError(f"{_missing_message()}; the download failed: {reason}") from None


def _conv_state(state: Mapping[str, torch.Tensor], net: VGG19, source: str) -> dict[str, torch.Tensor]:
    """The entries of ``net.features`` from a torchvision state dict (``features.i.*`` or bare ``i.*`` keys)."""
    wanted = net.features.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, own in wanted.items():
        value = state.get(f"features.{key}", state.get(key))
        if value is None:
            raise UserError(f"option --vgg_weights: {source} is not a VGG-19 state dict (no 'features.{key}')")
        expected = own.shape
        if tuple(value.shape) != tuple(expected):
            raise UserError(f"option --vgg_weights: {source}: 'features.{key}' has shape {tuple(value.shape)}, "
                            f"VGG-19 needs {tuple(expected)}")
        out[key] = value
    return out


def _random_init(net: VGG19, seed: int) -> None:
    """He-normal weights from a generator of its own (the global RNG is left alone), zero biases: activations keep
    their scale through the ReLU stack, so the losses see realistic magnitudes."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.features:
            if isinstance(module, nn.Conv2d):
                fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                module.bias.zero_()


def build_vgg19(weights: str | os.PathLike | None = None, *, last_layer: str = "pool5", pool: str = "max",
                padding: str = "zeros", seed: int = 0) -> VGG19:
    """A frozen VGG-19 in eval mode with ImageNet weights (see ``load_vgg19_state`` for where they come from).

    Args:
        weights: a weights file, "" / None for torchvision's cache or download, or "random" for seeded random weights
            (tests and debugging only: the features of a random network do not describe style).
        seed: the seed of the random weights.
    """
    net = VGG19(last_layer=last_layer, pool=pool, padding=padding)
    if str(weights) == RANDOM_WEIGHTS:
        _random_init(net, seed)
    else:
        source = str(weights) if weights else str(vgg19_cache_path())
        net.features.load_state_dict(_conv_state(load_vgg19_state(weights), net, source))
    net.requires_grad_(False)
    return net.eval()
