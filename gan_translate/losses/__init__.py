"""Losses: adversarial objectives (vanilla, LSGAN, WGAN-GP, hinge, relativistic average LSGAN)."""

from gan_translate.losses.adversarial import GAN_MODES, GANLoss, gradient_penalty, relativistic_average_lsgan

__all__ = ["GAN_MODES", "GANLoss", "gradient_penalty", "relativistic_average_lsgan"]
