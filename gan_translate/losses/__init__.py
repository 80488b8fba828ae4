"""Losses: adversarial objectives (vanilla, LSGAN, WGAN-GP, hinge, relativistic average LSGAN) and CUT's PatchNCE."""

from gan_translate.losses.adversarial import GAN_MODES, GANLoss, gradient_penalty, relativistic_average_lsgan
from gan_translate.losses.patchnce import PatchNCELoss, patch_nce

__all__ = ["GAN_MODES", "GANLoss", "PatchNCELoss", "gradient_penalty", "patch_nce", "relativistic_average_lsgan"]
