"""Adversarial losses: the GAN objectives of the supported models, the WGAN-GP penalty and relativistic LSGAN.

- vanilla: the original GAN (Goodfellow et al. 2014), binary cross-entropy on logits (pix2pix);
- lsgan: least squares (Mao et al. 2017), MSE to 1 for real and 0 for fake (CycleGAN, MIXGAN);
- wgangp: Wasserstein critic (Arjovsky et al. 2017) with ``gradient_penalty`` (Gulrajani et al. 2017);
- hinge: hinge loss (Lim & Ye 2017; Miyato et al. 2018);
- ``relativistic_average_lsgan``: RaLSGAN (Jolicoeur-Martineau 2018), used by TPFR (Svoboda et al. 2020).

Discriminators output raw scores (logits); no sigmoid anywhere. Predictions may be one tensor or a list of tensors
(multi-scale discriminators), in which case the loss is the mean over the list.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GAN_MODES", "GANLoss", "gradient_penalty", "relativistic_average_lsgan"]

Prediction = torch.Tensor | Sequence[torch.Tensor]


def _vanilla(pred: torch.Tensor, real: bool, for_discriminator: bool) -> torch.Tensor:
    target = torch.ones_like(pred) if real else torch.zeros_like(pred)
    return F.binary_cross_entropy_with_logits(pred, target)


def _lsgan(pred: torch.Tensor, real: bool, for_discriminator: bool) -> torch.Tensor:
    target = torch.ones_like(pred) if real else torch.zeros_like(pred)
    return F.mse_loss(pred, target)


def _wgan(pred: torch.Tensor, real: bool, for_discriminator: bool) -> torch.Tensor:
    # the critic raises its score on real and lowers it on fake; the generator raises it on its fakes
    return -pred.mean() if real else pred.mean()


def _hinge(pred: torch.Tensor, real: bool, for_discriminator: bool) -> torch.Tensor:
    if for_discriminator:
        # margin loss: no gradient once real scores exceed +1 and fake scores fall below -1
        return F.relu(1.0 - pred).mean() if real else F.relu(1.0 + pred).mean()
    # the generator's hinge loss is linear (no margin), as in SAGAN / BigGAN
    return -pred.mean() if real else pred.mean()


GAN_MODES: dict[str, Callable[[torch.Tensor, bool, bool], torch.Tensor]] = {
    "vanilla": _vanilla,
    "lsgan": _lsgan,
    "wgangp": _wgan,
    "hinge": _hinge,
}


def _as_list(prediction: Prediction) -> list[torch.Tensor]:
    if isinstance(prediction, torch.Tensor):
        return [prediction]
    predictions = list(prediction)
    if not predictions:
        raise ValueError("empty list of discriminator predictions")
    return predictions


class GANLoss(nn.Module):
    """GAN objective that hides the target labels: ``loss(prediction, target_is_real, for_discriminator)``.

    Targets are made with the prediction's shape, dtype and device at every call, so the module holds no tensors
    and works under mixed precision and on any device.

    Args:
        mode: "vanilla" | "lsgan" | "wgangp" | "hinge" (see the module docstring).

    Call args:
        prediction: D's output, or a list of outputs of a multi-scale D (the losses are averaged).
        target_is_real: True to push the scores towards "real" -- for D on real images and for G on its fakes.
        for_discriminator: only "hinge" uses it: D gets the margin loss, G the linear one (-mean score).
    """

    def __init__(self, mode: str):
        super().__init__()
        if mode not in GAN_MODES:
            raise ValueError(f"unknown GAN mode {mode!r}; choose one of {sorted(GAN_MODES)}")
        self.mode = mode
        self._loss = GAN_MODES[mode]

    def forward(self, prediction: Prediction, target_is_real: bool, for_discriminator: bool = True) -> torch.Tensor:
        losses = [self._loss(pred, target_is_real, for_discriminator) for pred in _as_list(prediction)]
        return torch.stack(losses).mean() if len(losses) > 1 else losses[0]

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


def gradient_penalty(
    discriminator: Callable[[torch.Tensor], Prediction],
    real: torch.Tensor,
    fake: torch.Tensor,
    kind: str = "mixed",
    constant: float = 1.0,
    lambda_gp: float = 10.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """WGAN-GP gradient penalty (Gulrajani et al. 2017): ``lambda_gp * mean((||grad_x D(x)||_2 - constant)^2)``.

    Args:
        discriminator: the critic (a tensor or a list of tensors out; their sum is differentiated).
        real / fake: batches of the same shape; both are detached here.
        kind: where x is taken: "real", "fake", or "mixed" (a uniform per-sample interpolation between them).
        constant: the target gradient norm.
        lambda_gp: the weight; <= 0 disables the penalty.
        generator: source of the interpolation weights, for reproducible runs (torch's default when None).

    Returns:
        ``(penalty, gradients)`` with gradients flattened to (N, -1) -- ``(0, None)`` when disabled. The penalty keeps
        its graph (``create_graph=True``) so that it can be back-propagated into D's weights.
    """
    if lambda_gp <= 0.0:
        return real.new_zeros(()), None
    real, fake = real.detach(), fake.detach()
    if kind == "real":
        points = real
    elif kind == "fake":
        points = fake
    elif kind == "mixed":
        alpha_shape = (real.shape[0],) + (1,) * (real.dim() - 1)
        alpha = torch.rand(alpha_shape, generator=generator, device=generator.device if generator else real.device)
        alpha = alpha.to(device=real.device, dtype=real.dtype)
        points = alpha * real + (1.0 - alpha) * fake
    else:
        raise ValueError(f"unknown gradient penalty kind {kind!r}; choose one of ['fake', 'mixed', 'real']")
    points = points.clone().requires_grad_(True)

    outputs = _as_list(discriminator(points))
    (gradients,) = torch.autograd.grad(
        outputs=outputs,
        inputs=points,
        grad_outputs=[torch.ones_like(out) for out in outputs],
        create_graph=True,
        retain_graph=True,
    )
    gradients = gradients.reshape(real.shape[0], -1)
    # the tiny offset keeps the norm differentiable where the gradient is exactly zero (as the reference does)
    penalty = ((gradients + 1e-16).norm(2, dim=1) - constant).pow(2).mean() * lambda_gp
    return penalty, gradients


def relativistic_average_lsgan(
    pred_real: Prediction, pred_fake: Prediction, for_discriminator: bool
) -> torch.Tensor:
    """Relativistic average LSGAN loss (Jolicoeur-Martineau 2018), as TPFR's released code computes it.

    With r = D(real), f = D(fake) and means taken over all elements of the tensor:

        D loss = ( mean((r - mean(f) - 1)^2) + mean((f - mean(r) + 1)^2) ) / 2
        G loss = ( mean((r - mean(f) + 1)^2) + mean((f - mean(r) - 1)^2) ) / 2

    i.e. D wants real scores one above the average fake and fake scores one below the average real; G the reverse.
    The halving follows nnaisense/conditional-style-transfer. Both arguments keep their graphs: detach the fakes for
    the D step. Lists of predictions (multi-scale) are paired element-wise and averaged.
    """
    reals, fakes = _as_list(pred_real), _as_list(pred_fake)
    if len(reals) != len(fakes):
        raise ValueError(f"{len(reals)} real predictions but {len(fakes)} fake ones")
    margin = 1.0 if for_discriminator else -1.0
    losses = [
        0.5 * (((r - f.mean() - margin) ** 2).mean() + ((f - r.mean() + margin) ** 2).mean())
        for r, f in zip(reals, fakes)
    ]
    return torch.stack(losses).mean() if len(losses) > 1 else losses[0]
