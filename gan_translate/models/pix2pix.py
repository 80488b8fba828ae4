"""Pix2Pix: paired image-to-image translation with a conditional GAN.

Isola, Zhu, Zhou, Efros, "Image-to-Image Translation with Conditional Adversarial Networks", CVPR 2017.
G: U-Net (unet_256) with dropout as the noise source; D: a conditional 70x70 PatchGAN that sees [A, B] (6 channels);
loss: GAN + lambda_L1 * L1(G(A), B), D's loss halved, no image pool. This is also the template for a new model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gan_translate.config import TrainOptions, opt
from gan_translate.models.base import StepContext, TranslationModel, register_model
from gan_translate.nets import bare, set_requires_grad


@dataclass
class Pix2PixOptions(TrainOptions):
    """Pix2Pix options (paper defaults live in options/pix2pix.yaml)."""

    lambda_L1: float = opt(100.0, "weight of the L1 loss between G(A) and B", minimum=0.0)


@register_model("pix2pix")
class Pix2PixModel(TranslationModel):
    """Conditional GAN on aligned pairs: G(A) should look like B to a D that also sees A."""

    Options = Pix2PixOptions
    inference_nets = ("G",)
    grid_columns = 3

    def __init__(self, options: Pix2PixOptions, *, training: bool = True) -> None:
        super().__init__(options, training=training)
        o = options
        self.nets["G"] = self.build_netG(o.input_nc, o.output_nc)
        if training:
            self.nets["D"] = self.build_netD(o.input_nc + o.output_nc)  # conditional: D sees A beside B
            self.optimizers = {"G": self.adam("G"), "D": self.adam("D")}
        self.l1 = nn.L1Loss()
        self._last: dict[str, torch.Tensor] = {}

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, float]:
        real_a, real_b = batch["A"], batch["B"]
        net_g, net_d = self.nets["G"], self.nets["D"]
        fake_b = net_g(real_a)

        # D first (as in the reference): real pair [A, B] vs fake pair [A, G(A)].
        set_requires_grad(net_d, True)
        self.optimizers["D"].zero_grad(set_to_none=True)
        loss_d = self.discriminator_loss(net_d, torch.cat([real_a, real_b], 1), torch.cat([real_a, fake_b], 1))
        ctx.backward(loss_d)
        self.optimizers["D"].step()

        # G: fool the frozen D (run without the DDP wrapper: it gets no gradients here) and stay close to B in L1.
        set_requires_grad(net_d, False)
        self.optimizers["G"].zero_grad(set_to_none=True)
        pred_fake = bare(net_d)(torch.cat([real_a, fake_b], 1))
        loss_g_gan = self.gan_loss(pred_fake, True, for_discriminator=False)
        loss_g_l1 = self.l1(fake_b, real_b) * self.opt.lambda_L1
        ctx.backward(loss_g_gan + loss_g_l1)
        self.optimizers["G"].step()

        self._last = {"real_A": real_a.detach(), "fake_B": fake_b.detach(), "real_B": real_b.detach()}
        return {"G_GAN": loss_g_gan.item(), "G_L1": loss_g_l1.item(), "D": loss_d.item()}

    def visuals(self) -> dict[str, torch.Tensor]:
        return dict(self._last)

    def translate(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {"fake_B": self.nets["G"](batch["A"])}
