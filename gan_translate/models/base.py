"""The model contract shared by every trained model, and the registry.

A model owns its networks (``self.nets``, an ``nn.ModuleDict`` whose entries are saved as safetensors) and its
optimizers (``self.optimizers``). The trainer hands it batches; the model says in plain code what one training step
does and returns its losses as a dict. It knows nothing of Accelerate: the trainer passes a ``StepContext`` whose
``backward`` is the accelerator's (mixed-precision scaling, gradient sync), and may replace the entries of ``nets`` and
``optimizers`` with their distributed wrappers. Run a frozen network (a discriminator during the generator step) through
``nets.bare(...)`` so that the DDP wrapper does not wait for gradients that never come.

To add a model, copy ``pix2pix.py``: an options dataclass (subclass of ``TrainOptions``), ``@register_model``, and
``__init__`` / ``training_step`` / ``visuals`` / ``translate``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from gan_translate.config import TrainOptions
from gan_translate.errors import UserError
from gan_translate.losses import GANLoss, gradient_penalty
from gan_translate.nets import build_discriminator, build_generator

MODELS: dict[str, type["TranslationModel"]] = {}

# TrainOptions.adam_impl -> torch.optim.Adam arguments. The fused kernel reads and writes each weight, gradient and
# moment once per step; the for-loop one makes several passes and temporaries (3x slower on CPU for pix2pix's 57M
# weights, where the optimizer step is a large share of an iteration).
ADAM_IMPLS: dict[str, dict[str, bool]] = {
    "fused": {"fused": True},
    "foreach": {"foreach": True},
    "for_loop": {"foreach": False},
}


def register_model(name: str) -> Callable[[type["TranslationModel"]], type["TranslationModel"]]:
    """Class decorator: makes the model available as ``--model name``."""

    def add(cls: type[TranslationModel]) -> type[TranslationModel]:
        if name in MODELS:
            raise ValueError(f"model {name!r} registered twice")
        cls.name = name
        MODELS[name] = cls
        return cls

    return add


def model_class(name: str) -> type["TranslationModel"]:
    """The registered class for ``name``; an unknown name is a one-line UserError listing the valid ones."""
    if name not in MODELS:
        raise UserError(f"option --model: unknown model '{name}' (choose from {', '.join(sorted(MODELS))})")
    return MODELS[name]


def create_model(options: TrainOptions, *, training: bool = True) -> "TranslationModel":
    """Builds the model named by ``options.model``; ``training=False`` builds only what translation needs."""
    return model_class(options.model)(options, training=training)


@dataclass
class StepContext:
    """What the trainer tells a model about the step it is asked to take."""

    step: int  # global step count before this step
    epoch: int  # 0-based epoch
    backward: Callable[[torch.Tensor], None]  # the accelerator's backward (loss scaling, DDP gradient sync)


class TranslationModel(nn.Module, ABC):
    """Base class of every trained model (see the module docstring for the contract)."""

    name: ClassVar[str] = ""
    Options: ClassVar[type[TrainOptions]] = TrainOptions
    # Networks needed to translate; a checkpoint loaded for inference restores only these.
    inference_nets: ClassVar[tuple[str, ...]] = ()
    # Style-transfer models translate {"A": content, "style": style image}; test.py then needs --style_dir.
    needs_style: ClassVar[bool] = False
    # Each inference network translates an image on its own (a generator): ONNX export writes one as a graph. False
    # for a model that translates through a chain of networks.
    translates_with_one_net: ClassVar[bool] = True

    def __init__(self, options: TrainOptions, *, training: bool = True) -> None:
        super().__init__()
        self.opt = options
        self.training_mode = training
        self.nets = nn.ModuleDict()
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.gan_loss = GANLoss(options.gan_mode)

    # ---- training
    @abstractmethod
    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, float]:
        """One optimisation step on ``batch``; returns the losses (python floats) to log."""

    def visuals(self) -> dict[str, torch.Tensor]:
        """Image batches of the last step, in display order (e.g. real_A, fake_B, rec_A), values in [-1, 1]."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        """Training state beyond networks and optimizers (e.g. image pools), as tensors/python values."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restores what ``extra_state`` returned."""

    # ---- inference
    @abstractmethod
    def translate(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Translated images for a batch (names as in ``visuals``); callers run it under torch.no_grad().

        ``batch["reconstruct"]`` (test.py sets it) asks a model with a way back (CycleGAN) for its reconstructions
        too (rec_A, rec_B); other models ignore it."""

    # ---- helpers for subclasses
    def build_netG(self, input_nc: int, output_nc: int) -> nn.Module:
        """The generator the shared options describe (--netG, --ngf, --norm, dropout, --upsample, --antialias, init)."""
        o = self.opt
        return build_generator(o.netG, input_nc, output_nc, ngf=o.ngf, norm=o.norm, use_dropout=not o.no_dropout,
                               upsample=o.upsample, antialias=o.antialias, init_type=o.init_type,
                               init_gain=o.init_gain)

    def build_netD(self, input_nc: int) -> nn.Module:
        """The discriminator the shared options describe (--netD, --ndf, --n_layers_D, --norm, --antialias, init)."""
        o = self.opt
        return build_discriminator(o.netD, input_nc, ndf=o.ndf, n_layers_D=o.n_layers_D, norm=o.norm,
                                   antialias=o.antialias, init_type=o.init_type, init_gain=o.init_gain)

    def adam(self, *module_names: str, lr: float | None = None) -> torch.optim.Adam:
        """Adam over the named networks with the reference's betas (beta1, 0.999)."""
        params = [p for name in module_names for p in self.nets[name].parameters()]
        return torch.optim.Adam(params, lr=self.opt.lr if lr is None else lr, betas=(self.opt.beta1, 0.999),
                                **ADAM_IMPLS[getattr(self.opt, "adam_impl", "fused")])

    def discriminator_loss(self, net_d: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """Half the sum of the real and fake terms (the reference halves D's loss to slow D down relative to G);
        with wgangp the gradient penalty of Gulrajani et al. (weight 10) is added."""
        loss = 0.5 * (self.gan_loss(net_d(real), True) + self.gan_loss(net_d(fake.detach()), False))
        if self.opt.gan_mode == "wgangp":
            loss = loss + gradient_penalty(net_d, real, fake.detach())[0]
        return loss

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
