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
from gan_translate.nets import bare, build_discriminator, build_generator, set_requires_grad


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
    # Speed and memory (see training_step; README "Performance", measured on CPU). Batching the calls that share a
    # generator gained nothing on CPU (-1% to +2% per step) and keeps three generator passes alive instead of two
    # (+0.2 GB at 256 px), so it is off; the GPU numbers in the README were taken with it on.
    batch_generator_calls = False  # G_A(real_A) and G_A(real_B) (identity) in one call, likewise G_B, where exact
    backward_per_cycle = True  # back-propagate each cycle's losses at once (False: one backward, as the reference)

    def __init__(self, options: CycleGANOptions, *, training: bool = True) -> None:
        super().__init__(options, training=training)
        o = options
        init = dict(init_type=o.init_type, init_gain=o.init_gain)
        gen = dict(ngf=o.ngf, norm=o.norm, use_dropout=not o.no_dropout, upsample=o.upsample, **init)
        self.nets["G_A"] = build_generator(o.netG, o.input_nc, o.output_nc, **gen)
        self.nets["G_B"] = build_generator(o.netG, o.output_nc, o.input_nc, **gen)
        if training:
            disc = dict(ndf=o.ndf, n_layers_D=o.n_layers_D, norm=o.norm, **init)
            self.nets["D_A"] = build_discriminator(o.netD, o.output_nc, **disc)
            self.nets["D_B"] = build_discriminator(o.netD, o.input_nc, **disc)
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

        use_idt = o.lambda_identity > 0
        # Each generator's two calls on real images (translation and identity) as one batch: fewer, larger
        # convolutions. Exact only where every image is normalised on its own (InstanceNorm, no norm); BatchNorm would
        # pool the statistics of both, so it keeps separate calls.
        batched = self.batch_generator_calls and use_idt and o.norm != "batch" and real_a.shape == real_b.shape

        # Generators, against frozen discriminators. Each cycle (A -> B -> A with G_A's GAN term, then B -> A -> B, then
        # the identity terms) is back-propagated as soon as its losses are known: the gradients add up to those of the
        # summed loss, and two generator passes' activations are alive at a time instead of all six (2.5 GB instead of
        # 3.8 GB at 256 px).
        set_requires_grad([d_a, d_b], False)
        self.optimizers["G"].zero_grad(set_to_none=True)
        terms: dict[str, torch.Tensor] = {}
        images: dict[str, torch.Tensor] = {}
        pending: list[torch.Tensor] = []
        cycles = (("A", "B", g_a, g_b, d_a, real_a, real_b, o.lambda_A, o.lambda_B),
                  ("B", "A", g_b, g_a, d_b, real_b, real_a, o.lambda_B, o.lambda_A))
        for src, dst, g, g_back, d, real, other, lambda_cycle, lambda_other in cycles:
            fake, idt = g(torch.cat([real, other])).split(len(real)) if batched else (g(real), None)
            rec = g_back(fake)
            loss = {f"G_{src}": self.gan_loss(bare(d)(fake), True, for_discriminator=False),
                    f"cycle_{src}": self.l1(rec, real) * lambda_cycle}
            if idt is not None:
                loss[f"idt_{src}"] = self.l1(idt, other) * lambda_other * o.lambda_identity
            if self.backward_per_cycle:
                ctx.backward(sum(loss.values()))
            else:
                pending += loss.values()
            terms.update(loss)
            images[f"fake_{dst}"], images[f"rec_{src}"] = fake, rec
        if use_idt and not batched:
            # G fed an image of its own output domain should leave it alone: keeps colours from drifting. Separate
            # calls get their own backward pass, so that at most two generator passes are alive at a time.
            loss = {f"idt_{src}": self.l1(g(other), other) * lambda_other * o.lambda_identity
                    for src, _, g, _, _, _, other, _, lambda_other in cycles}
            if self.backward_per_cycle:
                ctx.backward(sum(loss.values()))
            else:
                pending += loss.values()
            terms.update(loss)
        if pending:
            ctx.backward(sum(pending))
        self.optimizers["G"].step()
        fake_a, fake_b, rec_a, rec_b = (images[k] for k in ("fake_A", "fake_B", "rec_A", "rec_B"))

        # Discriminators, each on a mix of fresh and pooled fakes.
        set_requires_grad([d_a, d_b], True)
        self.optimizers["D"].zero_grad(set_to_none=True)
        loss_d_a = self.discriminator_loss(d_a, real_b, self.fake_b_pool.query(fake_b.detach()))
        loss_d_b = self.discriminator_loss(d_b, real_a, self.fake_a_pool.query(fake_a.detach()))
        ctx.backward(loss_d_a + loss_d_b)
        self.optimizers["D"].step()

        self._last = {k: v.detach() for k, v in (("real_A", real_a), ("fake_B", fake_b), ("rec_A", rec_a),
                                                 ("real_B", real_b), ("fake_A", fake_a), ("rec_B", rec_b))}
        logs = {k: terms[k].item() for k in ("idt_A", "idt_B") if k in terms}
        logs.update(D_A=loss_d_a.item(), G_A=terms["G_A"].item(), cycle_A=terms["cycle_A"].item(),
                    D_B=loss_d_b.item(), G_B=terms["G_B"].item(), cycle_B=terms["cycle_B"].item())
        return logs

    def visuals(self) -> dict[str, torch.Tensor]:
        return dict(self._last)

    def extra_state(self) -> dict[str, Any]:
        return {"fake_A_pool": self.fake_a_pool.state_dict(), "fake_B_pool": self.fake_b_pool.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.fake_a_pool.load_state_dict(state["fake_A_pool"])
        self.fake_b_pool.load_state_dict(state["fake_B_pool"])

    def translate(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = {}
        if "A" in batch:
            out["fake_B"] = self.nets["G_A"](batch["A"])
        if "B" in batch:
            out["fake_A"] = self.nets["G_B"](batch["B"])
        return out
