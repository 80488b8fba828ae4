"""TPFR: arbitrary style transfer by two-stage peer-regularized feature recombination, with no pretrained network.

Svoboda, Anoosheh, Osendorfer, Masci, "Two-Stage Peer-Regularized Feature Recombination for Arbitrary Image Style
Transfer", CVPR 2020; authors' code nnaisense/conditional-style-transfer (PyTorch 1.4 only: it steps one optimizer and
then back-propagates a graph through the weights it just changed; here every step has its own forward for what it
trains, and no tensor autograd needs is edited in place).

Networks (gan_translate/nets/tpfr_parts.py, gan_translate/nets/peer.py): encoder E (content z_c, style z_s with a
global branch), peer layer, main decoder G, auxiliary decoder G_aux (same shape, own weights), and a noisy conditional
PatchGAN D on [image, style image]. A batch holds a photo A, another photo A2, a style image S and another image S2 of
S's class (the "styles" dataset mode). One training step takes three optimizer steps:

(a) aux (E, G_aux): content feature cycle  d(E(stylized).c, E(A).c), d(E(G(E(A))).c, E(A).c);  metric loss on style
    codes (positives S~S2 and A~A2, negatives photo~style and, added here, styles of different classes in the batch;
    mean(pos) + max(0, margin - mean(neg)));  aux latent cycle (5 re-encoding terms of G_aux's reconstructions: content,
    style, middle of A; style, middle of S);  aux reconstruction MSE of A and S.
(b) main (peer layer, G): relativistic-average LSGAN against D on (A, A2) vs (G(E(A)), A2) and (S2, S) vs (stylized,
    S);  reconstruction MSE of A and S, halved, x25;  transfer latent cycle d(E(stylized).c, E(A).c) +
    d(E(stylized).s, E(S).s), halved.
(c) D: RaLSGAN on the same pairs, fakes drawn through an image pool of 50.

``d`` is SmoothL1 summed over channels and averaged over pixels, with the second argument (the target) detached. The
stylized image is G(peer(E(A), peers E(S))), computed from detached codes: only the aux step trains the encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gan_translate.config import TrainOptions, choice, opt
from gan_translate.errors import UserError
from gan_translate.losses import relativistic_average_lsgan
from gan_translate.models.base import StepContext, TranslationModel, register_model
from gan_translate.models.image_pool import ImagePool
from gan_translate.nets import bare, init_weights, pad_to_multiple, set_requires_grad
from gan_translate.nets.peer import PEER_MODES, PeerRegularization
from gan_translate.nets.tpfr_parts import STRIDE, ConditionalNoisyDiscriminator, TPFRDecoder, TPFREncoder

Codes = dict[str, torch.Tensor]


@dataclass
class TPFROptions(TrainOptions):
    """TPFR options (paper defaults live in options/tpfr.yaml)."""

    dataset_mode: str = choice("styles", ("styles",), "content/ photos and style/ images by class (data/styles.py)")
    n_blocks: int = opt(6, "residual blocks in the encoder and in each decoder", minimum=0)
    no_global_style: bool = opt(False, "keep all of z_s local (no global style branch)")
    knn: int = opt(5, "nearest peer pixels each latent pixel attends to", minimum=1)
    att_dropout: float = opt(0.2, "dropout on the peer attention scores", minimum=0.0)
    peers: str = choice("sample", PEER_MODES,
                        "sample: a content image attends only to its own style image; batch: to every style image of "
                        "the batch (the authors' code)")
    peer_chunk: int = opt(1024, "query pixels per block of the kNN search (bounds memory; same result)", minimum=1)
    D_noise: float = opt(0.1, "std of the Gaussian noise on the discriminator's input", minimum=0.0)
    ml_margin: float = opt(1.0, "margin of the metric loss on style codes", minimum=0.0)
    lambda_cont: float = opt(1.0, "content feature cycle (aux step)", minimum=0.0)
    lambda_style: float = opt(1.0, "metric loss on style codes (aux step)", minimum=0.0)
    lambda_cycle_aux: float = opt(1.0, "aux latent cycle (aux step)", minimum=0.0)
    lambda_idt_aux: float = opt(1.0, "aux decoder reconstruction (aux step)", minimum=0.0)
    lambda_gen: float = opt(1.0, "adversarial loss (main step)", minimum=0.0)
    lambda_idt: float = opt(25.0, "main decoder reconstruction (main step)", minimum=0.0)
    lambda_transf: float = opt(1.0, "transfer latent cycle (main step)", minimum=0.0)
    lambda_disc: float = opt(1.0, "discriminator loss", minimum=0.0)
    scale_jitter: float = opt(0.0, "scale the resize before the crop by U(1-s, 1+s) (paper 0.1)", minimum=0.0)
    epoch_size: int = opt(0, "items per epoch (0 = the larger of the photo and style counts; paper 6144)", minimum=0)

    def validate(self) -> None:
        super().validate()
        if self.input_nc != self.output_nc:
            raise UserError(f"option --output_nc: TPFR encodes photos and style images with one encoder, so input_nc "
                            f"and output_nc must be equal (got {self.input_nc} and {self.output_nc})")
        if self.gan_mode != "lsgan":
            raise UserError(f"option --gan_mode: TPFR always uses its relativistic-average LSGAN; leave gan_mode at "
                            f"lsgan (got {self.gan_mode})")
        if self.scale_jitter >= 1.0:
            raise UserError(f"option --scale_jitter: must be below 1, got {self.scale_jitter}")


# ---------------------------------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------------------------------


def code_distance(codes: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample distance (N,) between latent maps: SmoothL1 summed over channels, averaged over pixels; ``target``
    is detached. A target of another spatial size is resized to ``codes``'s."""
    target = target.detach()
    if target.shape[-2:] != codes.shape[-2:]:
        target = F.interpolate(target, size=codes.shape[-2:], mode="bilinear", align_corners=False)
    return F.smooth_l1_loss(codes, target, reduction="none").sum(1).flatten(1).mean(1)


def metric_loss(style: torch.Tensor, style2: torch.Tensor, photo: torch.Tensor, photo2: torch.Tensor,
                labels: torch.Tensor, margin: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """TPFR's metric learning on style codes z_s: ``mean(pos) + max(0, margin - mean(neg))``.

    Positives: (style, style2) -- two images of one class -- and (photo2, photo) -- the photos are a class too.
    Negatives: (photo2, style2), (style, photo), and (style_i, style2_j) for every i != j of different classes.

    Returns:
        The loss and the distances by kind ("style_pos", "photo_pos", "photo_style_neg", "style_neg" when the batch
        holds two classes), each a 1-D tensor.
    """
    parts = {
        "style_pos": code_distance(style, style2),
        "photo_pos": code_distance(photo2, photo),
        "photo_style_neg": torch.cat([code_distance(photo2, style2), code_distance(style, photo)]),
    }
    labels = labels.view(-1)
    first, second = torch.nonzero(labels.view(-1, 1) != labels.view(1, -1), as_tuple=True)
    if first.numel():
        parts["style_neg"] = code_distance(style[first], style2[second])
    positives = torch.cat([parts["style_pos"], parts["photo_pos"]])
    negatives = torch.cat([parts["photo_style_neg"], parts.get("style_neg", positives.new_zeros(0))])
    return positives.mean() + F.relu(margin - negatives.mean()), parts


def _ralsgan_pairs(scores: list[torch.Tensor], for_discriminator: bool) -> torch.Tensor:
    """Mean RaLSGAN loss over (real, fake, real, fake, ...) score maps."""
    pairs = [relativistic_average_lsgan(scores[i], scores[i + 1], for_discriminator) for i in range(0, len(scores), 2)]
    return torch.stack(pairs).mean()


# ---------------------------------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------------------------------


def _run_batched(net: nn.Module, *inputs: list[torch.Tensor]) -> list:
    """Runs ``net`` once on the batch-concatenation of equally shaped inputs and splits the result back (one forward
    per step keeps DDP's bookkeeping simple); inputs of different shapes are run one by one."""
    first = inputs[0]
    if any(x.shape[1:] != first[0].shape[1:] for group in inputs for x in group):
        return [net(*args) for args in zip(*inputs)]
    sizes = [x.shape[0] for x in first]
    out = net(*[torch.cat(group) for group in inputs])
    if isinstance(out, dict):
        split = {key: value.split(sizes) for key, value in out.items()}
        return [{key: split[key][i] for key in out} for i in range(len(sizes))]
    return list(out.split(sizes))


def _fit_stride(x: torch.Tensor) -> torch.Tensor:
    """Pads an image batch to sides that are multiples of the latent stride (a no-op for the usual crops)."""
    return pad_to_multiple(x, STRIDE, min_size=2 * STRIDE)[0]


def _latent(codes: Codes) -> torch.Tensor:
    return torch.cat([codes["content"], codes["style"]], dim=1)


@register_model("tpfr")
class TPFRModel(TranslationModel):
    """Encoder, two-stage peer layer, main and auxiliary decoders, conditional D (see the module docstring)."""

    Options = TPFROptions
    inference_nets = ("E", "peer", "G")
    needs_style = True
    grid_columns = 3

    def __init__(self, options: TPFROptions, *, training: bool = True) -> None:
        super().__init__(options, training=training)
        o = options
        init = dict(init_type=o.init_type, gain=o.init_gain)
        self.nets["E"] = init_weights(TPFREncoder(o.input_nc, o.ngf, o.n_blocks, not o.no_global_style), **init)
        self.nets["peer"] = init_weights(PeerRegularization(4 * o.ngf, 8 * o.ngf, k=o.knn, dropout=o.att_dropout,
                                                            peers=o.peers, chunk=o.peer_chunk), **init)
        self.nets["G"] = init_weights(TPFRDecoder(o.output_nc, o.ngf, o.n_blocks, o.upsample), **init)
        if training:
            self.nets["G_aux"] = init_weights(TPFRDecoder(o.output_nc, o.ngf, o.n_blocks, o.upsample), **init)
            self.nets["D"] = init_weights(ConditionalNoisyDiscriminator(o.output_nc, o.ndf, o.D_noise), **init)
            self.optimizers = {"aux": self.adam("E", "G_aux"), "main": self.adam("peer", "G"), "D": self.adam("D")}
            # Pools of (real, fake, condition) triples, each with its own generator so that resumes replay them.
            self.photo_pool = ImagePool(o.pool_size, torch.Generator().manual_seed(o.seed * 3 + 1))
            self.style_pool = ImagePool(o.pool_size, torch.Generator().manual_seed(o.seed * 3 + 2))
            # Attention dropout and D's input noise draw from a generator saved with the run, not from torch's
            # global one (which the data loader also draws from when a resumed epoch restarts its iterator).
            self.noise_rng = torch.Generator().manual_seed(o.seed * 3 + 3)
            self.nets["peer"].generator = self.noise_rng
            self.nets["D"].generator = self.noise_rng
        self._last: dict[str, torch.Tensor] = {}

    # ---- training
    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, float]:
        o = self.opt
        photo, photo2, style, style2 = (_fit_stride(batch[k]) for k in ("A", "A2", "style", "style2"))
        labels = batch["style_label"].to(photo.device)
        enc, peer, dec, dec_aux, disc = (self.nets[k] for k in ("E", "peer", "G", "G_aux", "D"))
        set_requires_grad([enc, dec_aux, peer, dec], True)
        set_requires_grad(disc, False)

        # Encode; then the main path from detached codes. Its graph waits for step (b): the aux step sees its outputs
        # detached, so the peer layer and G get no gradient there (the authors' freeze) and nothing is edited in place.
        z_photo, z_photo2, z_style, z_style2 = _run_batched(enc, [photo, photo2, style, style2])
        fixed_photo = {k: v.detach() for k, v in z_photo.items()}
        fixed_style = {k: v.detach() for k, v in z_style.items()}
        new_content, new_style = peer(fixed_photo["content"], fixed_photo["style"],
                                      fixed_style["content"], fixed_style["style"])
        stylized, rec_photo, rec_style = _run_batched(
            dec, [torch.cat([new_content, new_style], 1), _latent(fixed_photo), _latent(fixed_style)])

        # (a) aux step: encoder + global branch + aux decoder.
        self.optimizers["aux"].zero_grad(set_to_none=True)
        aux_photo, aux_style = _run_batched(dec_aux, [_latent(z_photo), _latent(z_style)])
        re_stylized, re_rec_photo, re_aux_photo, re_aux_style = _run_batched(
            enc, [stylized.detach(), rec_photo.detach(), aux_photo, aux_style])
        loss_cont = torch.cat([code_distance(re_stylized["content"], z_photo["content"]),
                               code_distance(re_rec_photo["content"], z_photo["content"])]).mean() * o.lambda_cont
        loss_metric, dist = metric_loss(z_style["style"], z_style2["style"], z_photo["style"], z_photo2["style"],
                                        labels, o.ml_margin)
        loss_metric = loss_metric * o.lambda_style
        loss_cycle_aux = torch.stack([
            code_distance(re_aux_photo["content"], z_photo["content"]).mean(),
            code_distance(re_aux_photo["style"], z_photo["style"]).mean(),
            code_distance(re_aux_style["style"], z_style["style"]).mean(),
            code_distance(re_aux_photo["middle"], z_photo["middle"]).mean(),
            code_distance(re_aux_style["middle"], z_style["middle"]).mean(),
        ]).mean() * o.lambda_cycle_aux
        loss_idt_aux = 0.5 * (F.mse_loss(aux_photo, photo) + F.mse_loss(aux_style, style)) * o.lambda_idt_aux
        ctx.backward(loss_cont + loss_metric + loss_cycle_aux + loss_idt_aux)
        self.optimizers["aux"].step()

        # (b) main step: peer layer + main decoder, against the frozen encoder (as a function) and frozen D.
        set_requires_grad([enc, dec_aux], False)
        self.optimizers["main"].zero_grad(set_to_none=True)
        re_main = bare(enc)(stylized)
        scores = _run_batched(bare(disc), [photo, rec_photo, style2, stylized], [photo2, photo2, style, style])
        loss_gen = _ralsgan_pairs(scores, for_discriminator=False) * o.lambda_gen
        loss_idt = 0.5 * (F.mse_loss(rec_photo, photo) + F.mse_loss(rec_style, style)) * o.lambda_idt
        loss_transf = 0.5 * (code_distance(re_main["content"], fixed_photo["content"]).mean()
                             + code_distance(re_main["style"], fixed_style["style"]).mean()) * o.lambda_transf
        ctx.backward(loss_gen + loss_idt + loss_transf)
        self.optimizers["main"].step()

        # (c) D step on (real, fake, condition) triples from the pools.
        set_requires_grad(disc, True)
        self.optimizers["D"].zero_grad(set_to_none=True)
        c = o.output_nc
        real_p, fake_p, cond_p = self.photo_pool.query(torch.cat([photo, rec_photo.detach(), photo2], 1)).split(c, 1)
        real_s, fake_s, cond_s = self.style_pool.query(torch.cat([style2, stylized.detach(), style], 1)).split(c, 1)
        scores = _run_batched(disc, [real_p, fake_p, real_s, fake_s], [cond_p, cond_p, cond_s, cond_s])
        loss_d = _ralsgan_pairs(scores, for_discriminator=True) * o.lambda_disc
        ctx.backward(loss_d)
        self.optimizers["D"].step()
        set_requires_grad([enc, dec_aux], True)
        # The peer layer's BatchNorm statistics, updated by each process on its own data, are made rank 0's on every
        # rank by the trainer after the step (engine.distributed.broadcast_buffers).

        self._last = {k: v.detach() for k, v in (("real_A", photo), ("style", style), ("stylized", stylized),
                                                 ("rec_A", rec_photo), ("rec_A_aux", aux_photo),
                                                 ("rec_style", rec_style))}
        logs = {"cont": loss_cont.item(), "metric": loss_metric.item(), "cycle_aux": loss_cycle_aux.item(),
                "idt_aux": loss_idt_aux.item(), "gen": loss_gen.item(), "idt": loss_idt.item(),
                "transf": loss_transf.item(), "D": loss_d.item()}
        logs.update({f"dist_{k}": v.mean().item() for k, v in dist.items()})
        return logs

    def visuals(self) -> dict[str, torch.Tensor]:
        return dict(self._last)

    def extra_state(self) -> dict[str, Any]:
        return {"photo_pool": self.photo_pool.state_dict(), "style_pool": self.style_pool.state_dict(),
                "noise_rng": self.noise_rng.get_state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.photo_pool.load_state_dict(state["photo_pool"])
        self.style_pool.load_state_dict(state["style_pool"])
        self.noise_rng.set_state(state["noise_rng"])

    # ---- inference
    def encode(self, images: torch.Tensor) -> Codes:
        """The latent codes of an image batch (sides padded to a multiple of 4): content, style, middle."""
        return self.nets["E"](_fit_stride(images))

    def translate(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``{"stylized"}``: each content image "A" (N, C, H, W) in the style of its style image "style" (N or 1,
        C, H', W'; any size). With peers "batch", every content image draws on every style image of the batch."""
        content, style = batch["A"], batch["style"]
        if style.shape[0] == 1 and content.shape[0] > 1:
            style = style.expand(content.shape[0], -1, -1, -1)
        padded, (left, right, top, bottom) = pad_to_multiple(content, STRIDE, min_size=2 * STRIDE)
        z_content, z_style = self.nets["E"](padded), self.encode(style)
        new_content, new_style = self.nets["peer"](z_content["content"], z_content["style"],
                                                   z_style["content"], z_style["style"])
        out = self.nets["G"](torch.cat([new_content, new_style], 1))
        height, width = out.shape[-2:]
        return {"stylized": out[..., top: height - bottom, left: width - right]}
