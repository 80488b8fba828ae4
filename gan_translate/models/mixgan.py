"""MIXGAN: shapes from one domain, colours and textures from another.

Hao, Yu, Zheng, "MIXGAN: Learning Concepts from Different Domains for Mixture Generation", IJCAI 2018 (released code
GuangyuanHao/MIXGAN, TensorFlow 1). Domain A (``trainA``, grayscale by default) gives the content, domain B
(``trainB``, colour) the style. Two phases:

1. Adversarial autoencoder (Makhzani et al. 2016) on A: the encoder E and the content decoder G_c learn to rebuild A
   (L1 x ``lambda_rec``) while a latent discriminator D_z (lr x ``lr_D_z_scale`` = 1/50) pushes E's codes onto the
   prior. Phase 1 ends after ``phase1_steps`` steps when that is > 0 (it wins), else after ``phase1_epochs`` epochs.
2. E and G_c frozen; the mixture decoder G_m paints G_c's last feature map of codes drawn from the prior and of encoded
   A images, against a patch discriminator D_p (lr x ``lr_D_p_scale`` = 1/10) with an 8x8 receptive field that
   sees B: it can only judge local colour and texture, so the shapes stay G_c's.

The discriminators' small learning rates suit the paper's long runs (100 epochs of 10^5 images): Adam moves each weight
by about its learning rate per step, so at lr/50 a run of a few thousand steps leaves D_z near its initialisation and
the encoder simply fools it, and D_p at lr/10 stays at chance while G_m's colours wander. Short runs need
``lr_D_z_scale`` about 0.05 and ``lr_D_p_scale`` 1 (the quick preset's values; measured in the issue 5 note).

The encoder's output layer is initialised so that the codes start at the prior's scale (He initialisation, see
``ContentEncoder.init_code_scale``), a departure from the released code's N(0, 0.02): G_c batch-normalises its input,
so reconstruction never asks for a scale, and codes that start 10x too small are told from prior samples by size
alone until the adversarial term has grown them.

LSGAN everywhere (the released code's default; ``gan_mode vanilla`` is its other choice). Decisions for this project
(../shared/specs/MODELS.md): Gaussian prior by default (``prior uniform`` is the released code's), and G_c is trained
with the encoder in phase 1 (the released code never updates it).
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from gan_translate.config import TrainOptions, choice, opt
from gan_translate.errors import UserError
from gan_translate.models.base import StepContext, TranslationModel, register_model
from gan_translate.nets import PatchDiscriminator, bare, init_weights, set_requires_grad
from gan_translate.nets.mixgan_parts import (
    MAX_SIZE,
    MIN_SIZE,
    ContentDecoder,
    ContentEncoder,
    LatentDiscriminator,
    MixtureDecoder,
    style_patch_recipe,
)


def _gaussian(n: int, dim: int, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(n, dim, generator=generator, device=generator.device if generator else None)


def _uniform(n: int, dim: int, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, dim, generator=generator, device=generator.device if generator else None) * 2.0 - 1.0


# The prior the codes are matched to: N(0, I) (the paper's adversarial autoencoder) or U[-1, 1] (the released code).
PRIORS: dict[str, Callable[[int, int, torch.Generator | None], torch.Tensor]] = {
    "gaussian": _gaussian,
    "uniform": _uniform,
}

# Standard deviation of one coordinate of each prior: N(0, 1) and U[-1, 1].
PRIOR_STD: dict[str, float] = {"gaussian": 1.0, "uniform": 3.0 ** -0.5}

# D_p's even kernels with "same" padding make torch pad a copy of the input; that costs little at these sizes, and the
# warning would otherwise greet every run. Silenced around D_p's use only (``_mixture_step``), not for the process.
_SAME_PADDING_WARNING = "Using padding='same' with even kernel lengths"

# Score above which a discriminator calls its input real: LSGAN targets 1 and 0, vanilla GAN scores are logits.
DECISION_THRESHOLD: dict[str, float] = {"lsgan": 0.5, "vanilla": 0.0}


@dataclass
class MixGANOptions(TrainOptions):
    """MIXGAN options (paper defaults live in options/mixgan.yaml; the image size is crop_size)."""

    input_nc: int = choice(1, (1, 3), "channels of the content images (domain A; 1 = grayscale, as in the paper)")
    dataset_mode: str = choice("unaligned", ("unaligned", "aligned"),
                               "how the data folder is organised (A = content, B = style; pairs are not used)")
    gan_mode: str = choice("lsgan", tuple(DECISION_THRESHOLD), "adversarial loss of all three discriminators")
    z_dim: int = opt(2048, "dimension of the codes z", minimum=1)
    fc_dim: int = opt(2048, "width of the encoder's and G_c's fully connected layers (the third is half)", minimum=2)
    n_blocks: int = opt(6, "residual blocks in G_c", minimum=0)
    upsample: str = choice("resize", ("transposed", "resize"),
                           "G_c's upsampling; resize = nearest + conv (default: the paper's transposed convolutions "
                           "leave a lattice that G_m paints instead of the content)")
    prior: str = choice("gaussian", tuple(PRIORS), "distribution the codes are matched to (uniform = released code)")
    lambda_rec: float = opt(10.0, "weight of the L1 reconstruction loss of phase 1", minimum=0.0)
    lr_D_z_scale: float = opt(0.02, "learning rate of the latent D relative to lr (paper: 1/50, made for ~10^5 "
                                    "steps; short runs need more, e.g. 0.05)", minimum=0.0)
    lr_D_p_scale: float = opt(0.1, "learning rate of the patch style D relative to lr (paper: 1/10, also made for "
                                    "long runs; a few thousand steps need 1)", minimum=0.0)
    phase1_epochs: int = opt(100, "epochs of phase 1 (autoencoder); used when phase1_steps is 0", minimum=0)
    phase1_steps: int = opt(0, "steps of phase 1; when > 0 it wins over phase1_epochs", minimum=0)
    phase2_codes: str = choice("both", ("both", "prior", "encoded"),
                               "what G_m paints in phase 2: G_c's features of prior samples, of encoded A, or both")

    def validate(self) -> None:
        super().validate()
        size = self.crop_size
        if not MIN_SIZE <= size <= MAX_SIZE or size & (size - 1):
            raise UserError(f"option --crop_size: MIXGAN's networks need square images of a power of two from "
                            f"{MIN_SIZE} to {MAX_SIZE} px, got {size}")
        if "crop" not in self.preprocess:
            raise UserError(f"option --preprocess: MIXGAN needs crop_size x crop_size images; '{self.preprocess}' "
                            "does not crop (use resize_and_crop, crop or scale_width_and_crop)")
        if self.batch_size < 2:
            raise UserError("option --batch_size: MIXGAN's fully connected layers use batch norm, which needs at "
                            "least 2 images per batch")


@contextlib.contextmanager
def evaluating(*nets: nn.Module) -> Iterator[None]:
    """Runs the block with ``nets`` in eval mode (BatchNorm on its running statistics, no statistics updated) and
    restores each module's own mode afterwards."""
    modes = [(m, m.training) for net in nets for m in net.modules()]
    for net in nets:
        net.eval()
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode


@register_model("mixgan")
class MixGANModel(TranslationModel):
    """Adversarial autoencoder on the content domain, then a mixture decoder trained against the style domain."""

    Options = MixGANOptions
    inference_nets = ("E", "G_c", "G_m")
    translates_with_one_net = False  # E -> G_c's features -> G_m
    grid_columns = 3

    def __init__(self, options: MixGANOptions, *, training: bool = True) -> None:
        super().__init__(options, training=training)
        o = options
        self.size = o.crop_size
        sizes = dict(ngf=o.ngf, z_dim=o.z_dim, fc_dim=o.fc_dim, norm=o.norm)
        nets: dict[str, nn.Module] = {
            "E": ContentEncoder(o.input_nc, self.size, **sizes),
            "G_c": ContentDecoder(o.input_nc, self.size, n_blocks=o.n_blocks, upsample=o.upsample, **sizes),
        }
        nets["G_m"] = MixtureDecoder(nets["G_c"].feature_channels, o.output_nc, ngf=o.ngf, norm=o.norm)
        if training:
            nets["D_z"] = LatentDiscriminator(o.z_dim, lift_channels=o.ngf, ndf=o.ndf, norm=o.norm)
            nets["D_p"] = PatchDiscriminator(o.output_nc, style_patch_recipe(o.ndf), norm=o.norm, padding="same")
        for name, net in nets.items():
            self.nets[name] = init_weights(net, o.init_type, o.init_gain)
        # Codes start at the prior's scale. With N(0, 0.02) weights they start near 0.1 (0.4 at the paper's sizes)
        # while G_c, whose first layer is batch-normalised, cannot see their scale: only the adversarial term grows
        # them, and until it has (thousands of steps), D_z tells codes from prior samples by their size alone.
        nets["E"].init_code_scale(PRIOR_STD[o.prior])
        if training:
            self.optimizers = {
                "E_G_c": self.adam("E", "G_c"),
                "D_z": self.adam("D_z", lr=o.lr * o.lr_D_z_scale),
                "G_m": self.adam("G_m"),
                "D_p": self.adam("D_p", lr=o.lr * o.lr_D_p_scale),
            }
        # Prior samples come from the model's own generator, saved with the checkpoint: the global RNG is also drawn by
        # the data loader when an epoch (or a resumed run) starts, which would make a resumed run draw other codes.
        self.prior_rng = torch.Generator().manual_seed(o.seed * 2 + 3)
        self.l1 = nn.L1Loss()
        self.threshold = DECISION_THRESHOLD[o.gan_mode]
        self._last: dict[str, torch.Tensor] = {}
        self._warned_single = False

    # ---- phases
    def phase_of(self, step: int, epoch: int) -> int:
        """1 (autoencoder) or 2 (mixture decoder) for a step; ``phase1_steps`` > 0 wins over ``phase1_epochs``."""
        o = self.opt
        if o.phase1_steps > 0:
            return 1 if step < o.phase1_steps else 2
        return 1 if epoch < o.phase1_epochs else 2

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` codes from the prior, on the model's device (drawn on ``generator``'s device when one is given, else
        from torch's global generator)."""
        return PRIORS[self.opt.prior](n, self.opt.z_dim, generator).to(self.device)

    def d_loss(self, pred_real: torch.Tensor, pred_fake: torch.Tensor) -> torch.Tensor:
        """A discriminator's loss: half the sum of its real and fake terms (LSGAN: mean (r-1)^2 and mean f^2)."""
        return 0.5 * (self.gan_loss(pred_real, True) + self.gan_loss(pred_fake, False))

    def accuracy(self, pred_real: torch.Tensor, pred_fake: torch.Tensor) -> float:
        """Balanced accuracy of a discriminator: the mean of its hit rates on real and on fake inputs (0.5 = chance)."""
        hits_real = (pred_real > self.threshold).float().mean()
        hits_fake = (pred_fake <= self.threshold).float().mean()
        return float((hits_real + hits_fake) / 2)

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, float]:
        if batch["A"].shape[0] < 2:
            # A trailing batch of one image (dataset size not a multiple of batch_size) cannot go through the
            # BatchNorm of the fully connected layers in training mode.
            if not self._warned_single:
                warnings.warn("MIXGAN skips batches of a single image (batch norm needs two); "
                              "choose a batch_size that divides the number of images", stacklevel=2)
                self._warned_single = True
            return {}
        return self._phase_steps[self.phase_of(ctx.step, ctx.epoch)](self, batch, ctx)

    def _discriminator_step(self, name: str, real: torch.Tensor, fake: torch.Tensor,
                            ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One update of discriminator ``name`` on ``real`` vs ``fake`` (detached). Leaves it frozen for the
        generator's update that follows; returns its loss and its (detached) scores on both."""
        d = self.nets[name]
        set_requires_grad(d, True)
        self.optimizers[name].zero_grad(set_to_none=True)
        pred_real, pred_fake = d(real), d(fake.detach())
        loss = self.d_loss(pred_real, pred_fake)
        ctx.backward(loss)
        self.optimizers[name].step()
        set_requires_grad(d, False)
        return loss, pred_real.detach(), pred_fake.detach()

    def _autoencoder_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, float]:
        """Phase 1: D_z on prior vs codes, then E + G_c on reconstruction and fooling D_z."""
        real_a = batch["A"]
        enc, dec, d_z = self.nets["E"], self.nets["G_c"], self.nets["D_z"]
        enc.train()
        dec.train()
        z_prior = self.sample_prior(real_a.shape[0], self.prior_rng)
        codes = enc(real_a)
        rec_a, _ = dec(codes)

        loss_d_z, pred_prior, pred_codes = self._discriminator_step("D_z", z_prior, codes, ctx)
        self.optimizers["E_G_c"].zero_grad(set_to_none=True)
        loss_adv = self.gan_loss(bare(d_z)(codes), True, for_discriminator=False)
        rec_l1 = self.l1(rec_a, real_a)
        ctx.backward(loss_adv + rec_l1 * self.opt.lambda_rec)
        self.optimizers["E_G_c"].step()
        set_requires_grad(d_z, True)
        # E and G_c's BatchNorm statistics (used by phase 2 and inference) are made rank 0's on every rank by the
        # trainer after the step (engine.distributed.broadcast_buffers).

        self._remember(real_a, batch["B"], z_prior)
        codes = codes.detach()
        return {"D_z": loss_d_z.item(), "E_adv": loss_adv.item(), "rec_L1": rec_l1.item(),
                "D_z_acc": self.accuracy(pred_prior, pred_codes),
                "z_mean": codes.mean().item(), "z_std": codes.std().item()}

    def _mixture_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, float]:
        """Phase 2: E and G_c frozen (eval mode, no grads); D_p on B vs mixtures, then G_m on fooling D_p."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_SAME_PADDING_WARNING, category=UserWarning)
            return self._mixture_update(batch, ctx)

    def _mixture_update(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, float]:
        real_a, real_b = batch["A"], batch["B"]
        enc, dec, g_m, d_p = (self.nets[k] for k in ("E", "G_c", "G_m", "D_p"))
        z_prior = self.sample_prior(real_a.shape[0], self.prior_rng)
        with torch.no_grad(), evaluating(enc, dec):
            sources = {"prior": z_prior, "encoded": bare(enc)(real_a)}
            if self.opt.phase2_codes != "both":
                sources = {self.opt.phase2_codes: sources[self.opt.phase2_codes]}
            _, features = bare(dec)(torch.cat(list(sources.values())))
        mix = g_m(features)

        loss_d_p, pred_real, pred_fake = self._discriminator_step("D_p", real_b, mix, ctx)
        self.optimizers["G_m"].zero_grad(set_to_none=True)
        loss_g_m = self.gan_loss(bare(d_p)(mix), True, for_discriminator=False)
        ctx.backward(loss_g_m)
        self.optimizers["G_m"].step()
        set_requires_grad(d_p, True)

        self._remember(real_a, real_b, z_prior)
        return {"D_p": loss_d_p.item(), "G_m": loss_g_m.item(),
                "D_p_acc": self.accuracy(pred_real, pred_fake)}

    _phase_steps: dict[int, Callable[["MixGANModel", dict[str, Any], StepContext], dict[str, float]]] = {
        1: _autoencoder_step,
        2: _mixture_step,
    }

    def _remember(self, real_a: torch.Tensor, real_b: torch.Tensor, z: torch.Tensor) -> None:
        # Only the inputs: visuals() recomputes the outputs of the current weights, without drawing random numbers
        # (the trainer may call it at different steps in a resumed run) and without touching BatchNorm statistics.
        self._last = {"A": real_a[:1].detach(), "B": real_b[:1].detach(), "z": z[:1].detach()}

    def extra_state(self) -> dict[str, Any]:
        return {"prior_rng": self.prior_rng.get_state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.prior_rng.set_state(state["prior_rng"])

    # ---- outputs
    def _generate(self, real_a: torch.Tensor | None, z: torch.Tensor | None) -> dict[str, torch.Tensor]:
        enc, dec, g_m = (bare(self.nets[k]) for k in ("E", "G_c", "G_m"))
        out: dict[str, torch.Tensor] = {}
        with evaluating(enc, dec, g_m):
            if real_a is not None:
                out["rec_A"], features = dec(enc(real_a))
                out["mix"] = g_m(features)
            if z is not None:
                out["sample_A"], features = dec(z)
                out["sample_mix"] = g_m(features)
        return out

    def visuals(self) -> dict[str, torch.Tensor]:
        if not self._last:
            return {}
        with torch.no_grad():
            out = self._generate(self._last["A"], self._last["z"])
        return {"real_A": self._last["A"], "rec_A": out["rec_A"], "mix": out["mix"],
                "sample_A": out["sample_A"], "sample_mix": out["sample_mix"], "real_B": self._last["B"]}

    def _fit(self, images: torch.Tensor) -> torch.Tensor:
        """Images at the networks' size (the fully connected layers fix it): other sizes are resized."""
        if images.shape[-2:] == (self.size, self.size):
            return images
        return F.interpolate(images, size=(self.size, self.size), mode="bilinear", align_corners=False,
                             antialias=True).clamp(-1, 1)

    def translate(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """For content images ``batch["A"]``: their mixture ``mix`` (G_m) and their reconstruction ``rec_A`` (G_c), at
        the networks' size. The mixture comes first: callers that take one output take the first."""
        out = self._generate(self._fit(batch["A"]), None)
        return {"mix": out["mix"], "rec_A": out["rec_A"]}

    def sample(self, n: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``n`` codes from the prior decoded: ``sample_A`` (G_c, content domain) and ``sample_mix`` (G_m)."""
        return self._generate(None, self.sample_prior(n, generator))
