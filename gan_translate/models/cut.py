"""CUT and FastCUT: contrastive unpaired translation.

Park, Efros, Zhang, Zhu, "Contrastive Learning for Unpaired Image-to-Image Translation", ECCV 2020. One generator G
(the shared ResNet generator, antialiased by default), one PatchGAN D (antialiased too), no cycle: a PatchNCE loss
(losses/patchnce.py) makes each patch of G(x) pick out the patch of x at the same place among the other sampled places,
both embedded by G's own encoder (``ResnetGenerator.encode`` at the taps ``nce_layers``) and by netF, one small MLP per
tap (``PatchSampleMLP``).

``--mode cut`` (the defaults of options/cut.yaml): G loss = lambda_GAN * LSGAN + 0.5 * (NCE(x, G(x)) + NCE(y, G(y))),
the second term being CUT's identity NCE on domain-B images. ``--mode fastcut`` applies FastCUT's differences
(``FASTCUT``: no identity NCE, lambda_NCE 10, flip equivariance, 150 + 50 epochs); any of them can still be set.

Reductions follow the authors' code (taesungp/contrastive-unpaired-translation), so its lambda values mean the same
here: per tap the mean over patches of lambda_NCE * PatchNCE, then the mean over taps, and CUT's 0.5 average of its two
NCE terms (the paper writes sums and lambda_X = lambda_Y = 1).

Departures from that code, each for a reported problem: netF is built from the taps' known channels when the model is
made, not on the first batch, so ``Accelerator.prepare``, DDP, checkpoints and resume need no data-dependent first pass
(its issues #2 and resume); the negatives' image count comes from the tensors (#67); patch ids come from torch's CPU
generator, which the trainer saves and restores (the authors moved off CUDA randperm for a crash, #83). The key pass
(G's encoder on the real image) runs without a graph: its features are detached in the loss anyway.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from gan_translate.config import TrainOptions, choice, opt
from gan_translate.errors import UserError
from gan_translate.losses import PatchNCELoss
from gan_translate.models.base import StepContext, TranslationModel, register_model
from gan_translate.nets import bare, init_weights, set_requires_grad

__all__ = ["CUTOptions", "CUTModel", "PatchSampleMLP", "FASTCUT", "available_taps"]

# What --mode fastcut changes (the authors' modify_commandline_options); a user's own value of any of them wins.
FASTCUT: dict[str, Any] = {"nce_idt": False, "lambda_NCE": 10.0, "flip_equivariance": True,
                           "n_epochs": 150, "n_epochs_decay": 50}


def available_taps(net_g: str) -> list[str]:
    """The tap names of ``ResnetGenerator.encode`` for a generator name (empty for a non-ResNet generator)."""
    match = re.fullmatch(r"resnet_(\d+)blocks", net_g)
    if match is None:
        return []
    return ["input", "down1", "down2", *(f"block{k}" for k in range(1, int(match[1]) + 1))]


@dataclass
class CUTOptions(TrainOptions):
    """CUT / FastCUT options (paper defaults in options/cut.yaml; --mode fastcut applies FastCUT's)."""

    mode: str = choice("cut", ("cut", "fastcut"), "cut: NCE on X and identity NCE on Y; fastcut: NCE on X only, "
                                                  "lambda_NCE 10, flip equivariance, 150 + 50 epochs")
    lambda_GAN: float = opt(1.0, "weight of the adversarial loss", minimum=0.0)
    lambda_NCE: float = opt(1.0, "weight of the PatchNCE loss (mean over patches and taps)", minimum=0.0)
    nce_idt: bool = opt(True, "identity NCE: PatchNCE between domain-B images and G of them (CUT)")
    flip_equivariance: bool = opt(False, "flip G's input half of the time and its encoder features back before the "
                                         "NCE (FastCUT)")
    nce_layers: str = opt("input,down1,down2,block1,block5",
                          "generator taps for PatchNCE: input (padded pixels), down1, down2 (downsampling convs "
                          "before their norm), block<k> (residual block k)")
    num_patches: int = opt(256, "places sampled per image and tap", minimum=1)
    nce_T: float = opt(0.07, "PatchNCE temperature", minimum=1e-6)
    netF_nc: int = opt(256, "width of netF's MLPs (and of the embeddings)", minimum=1)
    nce_includes_all_negatives_from_minibatch: bool = opt(
        False, "negatives from every image of the per-process batch instead of the same image only (SinCUT)")
    decay_no_jitter: bool = opt(True, "in the decay epochs (after n_epochs) resize straight to crop_size: no crop "
                                      "jitter, as the authors' loader does")

    @classmethod
    def presets(cls, chosen: dict[str, Any]) -> dict[str, Any]:
        return dict(FASTCUT) if str(chosen.get("mode", "cut")) == "fastcut" else {}

    @property
    def taps(self) -> list[str]:
        return [t.strip() for t in self.nce_layers.split(",") if t.strip()]

    def validate(self) -> None:
        super().validate()
        taps = available_taps(self.netG)
        if not taps:
            raise UserError(f"option --netG: CUT taps the encoder of a resnet_<k>blocks generator, not {self.netG}")
        if not self.taps:
            raise UserError("option --nce_layers: name at least one tap (e.g. input,down1,down2,block1,block5)")
        for tap in self.taps:
            if tap not in taps:
                raise UserError(f"option --nce_layers: tap '{tap}' does not exist in {self.netG} (taps: input, "
                                f"down1, down2, block1 ... {taps[-1]})")
        if self.input_nc != self.output_nc:
            raise UserError(f"option --output_nc: CUT encodes its own outputs with G's encoder, so input_nc and "
                            f"output_nc must be equal (got {self.input_nc} and {self.output_nc})")


class PatchSampleMLP(nn.Module):
    """netF: per tap, the features at sampled places through Linear(C, nc), ReLU, Linear(nc, nc), L2-normalised.

    Built from the taps' channels (no first pass). ``forward(features, num_patches, patch_ids=None)`` draws
    min(num_patches, H*W) distinct places per tap from torch's CPU generator -- the same places for every image of the
    batch -- unless ``patch_ids`` (from an earlier call) are given, and returns the embeddings (images * P, nc),
    image-major, with the ids used. Keys are sampled first and their ids reused for the queries, so that row i of both
    is the same place of the same image.
    """

    def __init__(self, channels: Sequence[int], nc: int = 256) -> None:
        super().__init__()
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(c, nc), nn.ReLU(), nn.Linear(nc, nc)) for c in channels)

    def forward(self, features: Sequence[torch.Tensor], num_patches: int,
                patch_ids: Sequence[torch.Tensor] | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if len(features) != len(self.mlps):
            raise ValueError(f"netF has {len(self.mlps)} MLPs, got {len(features)} feature maps")
        embeddings, used = [], []
        for index, (feature, mlp) in enumerate(zip(features, self.mlps)):
            images, channels, height, width = feature.shape
            if patch_ids is None:
                ids = torch.randperm(height * width)[: min(num_patches, height * width)].to(feature.device)
            else:
                ids = patch_ids[index]
            places = feature.flatten(2).transpose(1, 2)[:, ids].reshape(-1, channels)  # (images * P, C)
            x = mlp(places)
            embeddings.append(x / (x.norm(dim=1, keepdim=True) + 1e-7))
            used.append(ids)
        return embeddings, used


@register_model("cut")
class CUTModel(TranslationModel):
    """G: A -> B trained against a PatchGAN with PatchNCE between each input and its translation (see module doc)."""

    Options = CUTOptions
    inference_nets = ("G",)

    def __init__(self, options: CUTOptions, *, training: bool = True) -> None:
        super().__init__(options, training=training)
        o = options
        self.nets["G"] = self.build_netG(o.input_nc, o.output_nc)
        self.taps = o.taps
        if training:
            self.nets["D"] = self.build_netD(o.output_nc)
            channels = [self.nets["G"].tap_channels[t] for t in self.taps]
            # The authors initialise netF with the run's init after building it lazily; here it is built at once.
            self.nets["F"] = init_weights(PatchSampleMLP(channels, o.netF_nc), o.init_type, o.init_gain)
            self.optimizers = {"G": self.adam("G"), "D": self.adam("D"), "F": self.adam("F")}
        self.nce = PatchNCELoss(o.nce_T, o.nce_includes_all_negatives_from_minibatch)
        self.grid_columns = 4 if o.nce_idt else 3
        self._last: dict[str, torch.Tensor] = {}

    # ---- the objective
    def nce_loss(self, source: torch.Tensor, output: torch.Tensor, flipped: bool = False) -> torch.Tensor:
        """lambda_NCE * PatchNCE between ``source`` (keys) and G's ``output`` for it (queries), mean over patches and
        taps. ``flipped``: ``output`` was made from the mirrored source, so its features are mirrored back first."""
        g, net_f, o = bare(self.nets["G"]), self.nets["F"], self.opt
        queries = g.encode(output, self.taps)
        if flipped:
            queries = [q.flip(3) for q in queries]
        with torch.no_grad():  # the keys get no gradient (the loss detaches them): no graph to keep
            keys, ids = net_f(g.encode(source, self.taps), o.num_patches)
        queries, _ = net_f(queries, o.num_patches, ids)
        per_tap = [self.nce(q, k, len(i)).mean() * o.lambda_NCE for q, k, i in zip(queries, keys, ids)]
        return torch.stack(per_tap).mean()

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, float]:
        o = self.opt
        real_a, real_b = batch["A"], batch["B"]
        g, d = self.nets["G"], self.nets["D"]
        n = len(real_a)

        # One generator call for the translation and (CUT) the identity: InstanceNorm keeps the images apart.
        real = torch.cat([real_a, real_b]) if o.nce_idt else real_a
        flipped = o.flip_equivariance and bool(torch.rand(()) < 0.5)  # one coin per step, for the whole batch
        fake = g(real.flip(3) if flipped else real)
        fake_b, idt_b = fake[:n], (fake[n:] if o.nce_idt else None)

        # D first, on the detached fake, as the authors do.
        set_requires_grad(d, True)
        self.optimizers["D"].zero_grad(set_to_none=True)
        loss_d = self.discriminator_loss(d, real_b, fake_b)
        ctx.backward(loss_d)
        self.optimizers["D"].step()

        # G and netF against the frozen D (unwrapped: it gets no gradient here).
        set_requires_grad(d, False)
        self.optimizers["G"].zero_grad(set_to_none=True)
        self.optimizers["F"].zero_grad(set_to_none=True)
        loss_gan = self.gan_loss(bare(d)(fake_b), True, for_discriminator=False) * o.lambda_GAN
        loss_nce = self.nce_loss(real_a, fake_b, flipped)
        logs = {"D": loss_d.item(), "G_GAN": loss_gan.item(), "NCE": loss_nce.item()}
        nce_term = loss_nce
        if idt_b is not None:
            loss_nce_y = self.nce_loss(real_b, idt_b, flipped)
            nce_term = 0.5 * (loss_nce + loss_nce_y)
            logs["NCE_Y"] = loss_nce_y.item()
        ctx.backward(loss_gan + nce_term)
        self.optimizers["G"].step()
        self.optimizers["F"].step()

        shown = {"real_A": real_a, "fake_B": fake_b.flip(3) if flipped else fake_b, "real_B": real_b}
        if idt_b is not None:
            shown["idt_B"] = idt_b.flip(3) if flipped else idt_b
        self._last = {k: v.detach() for k, v in shown.items()}
        return logs

    def visuals(self) -> dict[str, torch.Tensor]:
        return dict(self._last)

    def translate(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {"fake_B": self.nets["G"](batch["A"])}
