"""Figures of a trained MIXGAN run: does phase 1 match the prior and reconstruct, does phase 2 take B's colours and keep
the content's edges?

    python scripts/mixgan_report.py --run checkpoints/mixgan_builtin [--checkpoint latest] [--phase train]
                                    [--max_images 400] [--out DIR]

Phase 1 (adversarial autoencoder): mean and std of the encoder's codes over the content images (the Gaussian prior has
0 and 1, the uniform one 0 and 0.577), the mean per-dimension std and the excess kurtosis; the latent discriminator's
balanced accuracy between as many prior samples and those codes (0.5 = it cannot tell them apart), and that of a
classifier trained afresh on each coordinate and its square (held-out halves); the L1 distance
between G_c's reconstructions and the inputs, in the images' [-1, 1] units, next to that of the training split's
mean content image (what a decoder that ignores its code would score).
Phase 2 (mixtures): the total-variation distance (0 = same, 1 = disjoint) between joint RGB histograms (8 bins per
channel) of the B images and of the mixtures of encoded content images, of mixtures of prior samples, and of the content
images themselves; as a floor, the distance between the two halves of B. The Pearson correlation of Sobel edge
magnitudes between each mixture and G_c's output that it paints, against the same with the pairs shuffled (chance),
also after a Gaussian blur (sigma 1 px) that keeps outlines and drops fine texture.
The figures are printed, written to DIR/report.json with a grid of examples, and logged to the run's TensorBoard under
report/ (logs/report) at the checkpoint's step.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision

from gan_translate.config import load_options
from gan_translate.data import create_dataset
from gan_translate.engine.checkpoint import CONFIG_FILE, find_checkpoint, load_net, load_state
from gan_translate.models.mixgan import MixGANModel, MixGANOptions

BINS = 8
SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def colour_histogram(images: torch.Tensor) -> torch.Tensor:
    """Joint RGB histogram (BINS^3, sums to 1) of all pixels of (N, C, H, W) images in [-1, 1]; gray counts as R=G=B."""
    rgb = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
    bins = ((rgb + 1) / 2 * BINS).long().clamp(0, BINS - 1)
    joint = (bins[:, 0] * BINS + bins[:, 1]) * BINS + bins[:, 2]
    counts = torch.bincount(joint.flatten(), minlength=BINS**3).double()
    return counts / counts.sum()


def histogram_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Total variation between the colour histograms of two image sets: half the L1 distance, in [0, 1]."""
    return 0.5 * float((colour_histogram(a) - colour_histogram(b)).abs().sum())


def blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (5x5 for sigma 1), reflect-padded, per channel."""
    radius = max(1, round(2 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-x.pow(2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    n, c, h, w = images.shape
    flat = F.pad(images.reshape(n * c, 1, h, w), (radius,) * 4, mode="reflect")
    flat = F.conv2d(F.conv2d(flat, kernel.view(1, 1, 1, -1)), kernel.view(1, 1, -1, 1))
    return flat.view(n, c, h, w)


def edges(images: torch.Tensor, sigma: float = 0.0) -> torch.Tensor:
    """Sobel gradient magnitude of the luminance, (N, H-2, W-2); with ``sigma`` > 0 the image is blurred first, so
    that fine texture (brick, stucco) counts less than the shapes' outlines."""
    if images.shape[1] == 3:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        images = (images * weights).sum(1, keepdim=True)
    if sigma > 0:
        images = blur(images, sigma)
    kernels = torch.stack([SOBEL_X, SOBEL_X.t()]).unsqueeze(1)
    grad = F.conv2d(images, kernels)
    return grad.pow(2).sum(1).sqrt()


def edge_correlation(a: torch.Tensor, b: torch.Tensor, sigma: float = 0.0) -> float:
    """Mean over images of the Pearson correlation between the edge maps of a[i] and b[i]."""
    ea, eb = edges(a, sigma).flatten(1), edges(b, sigma).flatten(1)
    ea, eb = ea - ea.mean(1, keepdim=True), eb - eb.mean(1, keepdim=True)
    corr = (ea * eb).sum(1) / (ea.norm(dim=1) * eb.norm(dim=1)).clamp_min(1e-12)
    return float(corr.mean())


def excess_kurtosis(values: torch.Tensor) -> float:
    """Excess kurtosis of all elements (Gaussian 0, uniform -1.2)."""
    centred = values - values.mean()
    return float(centred.pow(4).mean() / centred.pow(2).mean().pow(2) - 3)


def fresh_classifier_accuracy(codes: torch.Tensor, prior: torch.Tensor, steps: int = 300, seed: int = 0) -> float:
    """Held-out accuracy of a classifier trained afresh to tell codes from prior samples: logistic regression on each
    coordinate and its square (so a shifted mean or a wrong spread in any dimension shows), L2-regularised, trained on
    one half of each set and tested on the other. 0.5: the codes' per-dimension moments are the prior's. Unlike the
    latent D it has not been in the game with the encoder, so it is neither fooled by it nor behind it."""
    g = torch.Generator().manual_seed(seed)
    n = min(codes.shape[0], prior.shape[0]) // 2 * 2
    if n < 4:
        return float("nan")
    x = torch.cat([codes[:n], prior[:n]]).double()
    x = torch.cat([x, x.pow(2)], 1)
    x = (x - x.mean(0)) / x.std(0).clamp_min(1e-8)
    y = torch.cat([torch.ones(n), torch.zeros(n)]).double()
    order = torch.randperm(2 * n, generator=g)
    train, test = order[:n], order[n:]
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(x[train] @ w + b, y[train]) + 1e-2 * w.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return float(((x[test] @ w + b > 0).double() == y[test]).double().mean())


def load_images(options: MixGANOptions, phase: str, max_images: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The content (A) and style (B) images of a split, in order, unflipped, as the model was trained to see them."""
    view = dataclasses.replace(options, phase=phase, serial_batches=True, no_flip=True, max_dataset_size=max_images)
    dataset = create_dataset(view)
    n_a, n_b = len(dataset.a_paths), len(dataset.b_paths)
    items = [dataset[(0, i)] for i in range(max(n_a, n_b))]
    return torch.stack([it["A"] for it in items[:n_a]]), torch.stack([it["B"] for it in items[:n_b]])


@torch.no_grad()
def compute(model: MixGANModel, real_a: torch.Tensor, real_b: torch.Tensor, batch: int = 64, seed: int = 0,
            mean_a: torch.Tensor | None = None) -> tuple:
    """The figures (dict) and example images (dict of tensors) of a model in eval mode; ``mean_a`` is the training
    split's mean content image (default: that of ``real_a``)."""
    model.eval()
    enc, dec, g_m, d_z = (model.nets[k] for k in ("E", "G_c", "G_m", "D_z"))
    prior = model.sample_prior(real_a.shape[0], torch.Generator().manual_seed(seed))  # on the model's device
    out: dict[str, list[torch.Tensor]] = {k: [] for k in ("codes", "rec", "mix", "sample", "sample_mix", "d_codes",
                                                          "d_prior")}
    device = model.device
    for start in range(0, real_a.shape[0], batch):
        a, z = real_a[start: start + batch].to(device), prior[start: start + batch]
        codes = enc(a)
        rec, features = dec(codes)
        sample, sample_features = dec(z)
        for key, value in (("codes", codes), ("rec", rec), ("mix", g_m(features)), ("sample", sample),
                           ("sample_mix", g_m(sample_features)), ("d_codes", d_z(codes)), ("d_prior", d_z(z))):
            out[key].append(value.cpu())
    r = {k: torch.cat(v) for k, v in out.items()}
    half = real_b.shape[0] // 2
    codes, prior = r["codes"].double(), prior.cpu().double()
    figures = {
        "codes_mean": float(codes.mean()),
        "codes_std": float(codes.std()),
        "prior_std": float(prior.std()),
        "codes_std_per_dim": float(codes.std(0).mean()),  # mean over dimensions of each one's std across images
        "codes_excess_kurtosis": excess_kurtosis(codes),
        "prior_excess_kurtosis": excess_kurtosis(prior),
        "latent_D_accuracy": model.accuracy(r["d_prior"], r["d_codes"]),
        "fresh_classifier_accuracy": fresh_classifier_accuracy(codes, prior),
        "latent_D_score_prior": float(r["d_prior"].mean()),
        "latent_D_score_codes": float(r["d_codes"].mean()),
        "rec_L1": float((r["rec"] - real_a).abs().mean()),
        "rec_L1_mean_image": float((real_a.mean(0) if mean_a is None else mean_a).sub(real_a).abs().mean()),
        "hist_TV_mix_vs_B": histogram_distance(r["mix"], real_b),
        "hist_TV_sample_mix_vs_B": histogram_distance(r["sample_mix"], real_b),
        "hist_TV_content_vs_B": histogram_distance(real_a, real_b),
        "hist_TV_B_half_vs_half": histogram_distance(real_b[:half], real_b[half:]) if half else float("nan"),
        "edge_corr_mix_vs_Gc": edge_correlation(r["mix"], r["rec"]),
        "edge_corr_mix_vs_Gc_shuffled": edge_correlation(r["mix"], r["rec"].roll(1, 0)),
        "edge_corr_mix_vs_Gc_blur1": edge_correlation(r["mix"], r["rec"], sigma=1.0),
        "edge_corr_mix_vs_Gc_blur1_shuffled": edge_correlation(r["mix"], r["rec"].roll(1, 0), sigma=1.0),
        "edge_corr_mix_vs_content": edge_correlation(r["mix"], real_a),
        "edge_corr_sample_mix_vs_Gc": edge_correlation(r["sample_mix"], r["sample"]),
        "n_content": real_a.shape[0],
        "n_style": real_b.shape[0],
    }
    examples = {"content": real_a, "rec_A": r["rec"], "mix": r["mix"], "sample_A": r["sample"],
                "sample_mix": r["sample_mix"]}
    return figures, examples


def example_grid(examples: dict[str, torch.Tensor], n: int = 8) -> torch.Tensor:
    """Rows: content, G_c reconstruction, mixture, prior sample (G_c), its mixture; n columns."""
    rows = [(v[:n].expand(-1, 3, -1, -1) + 1) / 2 for v in examples.values()]
    return torchvision.utils.make_grid(torch.cat(rows), nrow=min(n, rows[0].shape[0]), padding=2).clamp(0, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="the run folder (checkpoints_dir/name)")
    parser.add_argument("--checkpoint", default="latest", help="latest, an epoch number or a folder name")
    parser.add_argument("--dataroot", default="", help="data folder (default: the one the run trained on)")
    parser.add_argument("--phase", default="train", help="split to evaluate (train or test)")
    parser.add_argument("--max_images", type=int, default=400, help="at most this many images per domain")
    parser.add_argument("--out", default="", help="folder for report.json and examples.png")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, ...")
    parser.add_argument("--no_tensorboard", action="store_true", help="do not log the figures to the run's TensorBoard")
    args = parser.parse_args(argv)

    run = Path(args.run)
    options = load_options(MixGANOptions, run / CONFIG_FILE)
    if args.dataroot:
        options.dataroot = args.dataroot
    ckpt = find_checkpoint(run, args.checkpoint)
    model = MixGANModel(options, training=True)  # the latent D is needed for its accuracy
    for name, net in model.nets.items():
        load_net(net, ckpt, name)
    model.to(args.device)
    step = int(load_state(ckpt)["progress"]["step"])
    real_a, real_b = load_images(options, args.phase, args.max_images)
    train_a = real_a if args.phase == "train" else load_images(options, "train", args.max_images)[0]
    figures, examples = compute(model, real_a, real_b, mean_a=train_a.mean(0))
    figures.update(checkpoint=ckpt.name, step=step, phase=args.phase,
                   phase_at_checkpoint=model.phase_of(step, int(load_state(ckpt)["progress"]["epoch"])))

    width = max(map(len, figures))
    for key, value in figures.items():
        print(f"{key:<{width}}  {value:.4f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    grid = example_grid(examples)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(figures, indent=2) + "\n")
        torchvision.utils.save_image(grid, out / "examples.png")
    if not args.no_tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(run / "logs" / "report")) as writer:
            for key, value in figures.items():
                if isinstance(value, float):
                    writer.add_scalar(f"report_{args.phase}/{key}", value, step)
            writer.add_image(f"report_{args.phase}/content|rec_A|mix|sample_A|sample_mix", grid, step)
    return 0


if __name__ == "__main__":
    sys.exit(main())
