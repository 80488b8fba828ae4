"""CycleGAN: unpaired translation with cycle consistency.

Zhu, Park, Isola, Efros, "Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial Networks", ICCV 2017.
G_A: A->B and G_B: B->A (ResNet generators), D_A judges B-domain images and D_B A-domain images (PatchGANs).
Losses: LSGAN; cycle L1 x lambda_A / lambda_B; identity L1 x lambda_identity * lambda (0.5 * 10 = 5 by default, the
main knob against colour inversion); D's loss halved; each D sees a pool of 50 past fakes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gan_translate.config import TrainOptions, opt
from gan_translate.models.image_pool import ImagePool
from gan_translate.errors import UserError
from gan_translate.models.base import StepContext, TranslationModel, register_model
from gan_translate.nets import bare, set_requires_grad


@dataclass
class CycleGANOptions(TrainOptions):
    """CycleGAN options (paper defaults live in options/cyclegan.yaml)."""

    lambda_A: float = opt(10.0, "weight of the cycle loss A -> B -> A", minimum=0.0)
    lambda_B: float = opt(10.0, "weight of the cycle loss B -> A -> B", minimum=0.0)
    lambda_identity: float = opt(0.5, "identity loss weight, relative to lambda_A/lambda_B (0 = off)", minimum=0.0)

    def validate(self) -> None:
        super().validate()
        if self.lambda_identity > 0 and self.input_nc != self.output_nc:
            raise UserError(f"option --lambda_identity: the identity loss needs input_nc == output_nc "
                            f"(got {self.input_nc} and {self.output_nc}); set --lambda_identity 0")


@register_model("cyclegan")
class CycleGANModel(TranslationModel):
    """Two generators and two discriminators trained jointly on unpaired domains A and B."""

    Options = CycleGANOptions
    inference_nets = ("G_A", "G_B")
    grid_columns = 3

    def __init__(self, options: CycleGANOptions, *, training: bool = True) -> None:
        super().__init__(options, training=training)
        o = options
        self.nets["G_A"] = self.build_netG(o.input_nc, o.output_nc)
        self.nets["G_B"] = self.build_netG(o.output_nc, o.input_nc)
        if training:
            self.nets["D_A"] = self.build_netD(o.output_nc)
            self.nets["D_B"] = self.build_netD(o.input_nc)
            self.optimizers = {"G": self.adam("G_A", "G_B"), "D": self.adam("D_A", "D_B")}
            # The pools draw from their own generators so that a resumed run replays the same choices.
            self.fake_a_pool = ImagePool(o.pool_size, torch.Generator().manual_seed(o.seed * 2 + 1))
            self.fake_b_pool = ImagePool(o.pool_size, torch.Generator().manual_seed(o.seed * 2 + 2))
        self.l1 = nn.L1Loss()
        self._last: dict[str, torch.Tensor] = {}

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, float]:
        o = self.opt
        real_a, real_b = batch["A"], batch["B"]
        g_a, g_b, d_a, d_b = (self.nets[k] for k in ("G_A", "G_B", "D_A", "D_B"))

        # Generators, against frozen discriminators:
        #   L_G = L_GAN(G_A, D_A) + lambda_A |G_B(G_A(a)) - a| + L_GAN(G_B, D_B) + lambda_B |G_A(G_B(b)) - b| + L_idt.
        # Each part is back-propagated as soon as it is known (the gradients add up to those of the sum), so that two
        # generator passes hold their activations at a time instead of six: peak RSS 2.47 instead of 3.72 GB at
        # 256 px, at the same speed (README "Performance").
        set_requires_grad([d_a, d_b], False)
        self.optimizers["G"].zero_grad(set_to_none=True)
        losses: dict[str, torch.Tensor] = {}
        fake_b, rec_a, losses["G_A"], losses["cycle_A"] = self._cycle(g_a, g_b, d_a, real_a, o.lambda_A)
        ctx.backward(losses["G_A"] + losses["cycle_A"])
        fake_a, rec_b, losses["G_B"], losses["cycle_B"] = self._cycle(g_b, g_a, d_b, real_b, o.lambda_B)
        ctx.backward(losses["G_B"] + losses["cycle_B"])
        if o.lambda_identity > 0:
            # A generator fed an image of its own output domain should leave it alone: keeps colours from drifting.
            losses["idt_A"] = self.l1(g_a(real_b), real_b) * o.lambda_B * o.lambda_identity
            losses["idt_B"] = self.l1(g_b(real_a), real_a) * o.lambda_A * o.lambda_identity
            ctx.backward(losses["idt_A"] + losses["idt_B"])
        self.optimizers["G"].step()

        # Discriminators, each on a mix of fresh and pooled fakes.
        set_requires_grad([d_a, d_b], True)
        self.optimizers["D"].zero_grad(set_to_none=True)
        losses["D_A"] = self.discriminator_loss(d_a, real_b, self.fake_b_pool.query(fake_b.detach()))
        losses["D_B"] = self.discriminator_loss(d_b, real_a, self.fake_a_pool.query(fake_a.detach()))
        ctx.backward(losses["D_A"] + losses["D_B"])
        self.optimizers["D"].step()

        self._last = {k: v.detach() for k, v in (("real_A", real_a), ("fake_B", fake_b), ("rec_A", rec_a),
                                                 ("real_B", real_b), ("fake_A", fake_a), ("rec_B", rec_b))}
        order = ("D_A", "G_A", "cycle_A", "idt_A", "D_B", "G_B", "cycle_B", "idt_B")  # the reference's log order
        return {k: losses[k].item() for k in order if k in losses}

    def _cycle(self, g: nn.Module, g_back: nn.Module, d: nn.Module, real: torch.Tensor,
               lambda_cycle: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """real -> g -> fake -> g_back -> rec: the fake, the reconstruction, g's adversarial loss against ``d`` and
        the weighted cycle-consistency L1."""
        fake = g(real)
        rec = g_back(fake)
        return fake, rec, self.gan_loss(bare(d)(fake), True, for_discriminator=False), self.l1(rec, real) * lambda_cycle

    def visuals(self) -> dict[str, torch.Tensor]:
        return dict(self._last)

    def extra_state(self) -> dict[str, Any]:
        return {"fake_A_pool": self.fake_a_pool.state_dict(), "fake_B_pool": self.fake_b_pool.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.fake_a_pool.load_state_dict(state["fake_A_pool"])
        self.fake_b_pool.load_state_dict(state["fake_B_pool"])

    def translate(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """fake_B = G_A(A) and/or fake_A = G_B(B); with ``batch["reconstruct"]`` also the cycles rec_A = G_B(fake_B)
        and rec_B = G_A(fake_A), as the reference's test writes them (their L1 to the input is the held-out figure
        that falls as CycleGAN learns; see README "Testing a model")."""
        out = {}
        if "A" in batch:
            out["fake_B"] = self.nets["G_A"](batch["A"])
            if batch.get("reconstruct"):
                out["rec_A"] = self.nets["G_B"](out["fake_B"])
        if "B" in batch:
            out["fake_A"] = self.nets["G_B"](batch["B"])
            if batch.get("reconstruct"):
                out["rec_B"] = self.nets["G_A"](out["fake_A"])
        return out
