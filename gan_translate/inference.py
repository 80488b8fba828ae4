"""Trained models for inference: a checkpoint folder -> a model, and ``load_translator`` for one image at a time.

    from gan_translate import load_translator
    t = load_translator("checkpoints/facades_pix2pix")     # the latest checkpoint of the run
    photo = t(Image.open("labels.png"))                     # any size, grey or colour; the same size comes back
    horse = load_translator("checkpoints/h2z")(zebra, direction="BtoA")   # CycleGAN: the second generator
    art = load_translator("checkpoints/adain")(photo, style=painting)     # style models take a style image

Checkpoints describe themselves (config.yaml beside the safetensors), so nothing about the networks is restated;
only the networks that translation needs (the model's ``inference_nets``) are built and loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from gan_translate.config import load_options, read_yaml
from gan_translate.data import pil_to_tensor, tensor_to_pil
from gan_translate.engine.checkpoint import CONFIG_FILE, find_checkpoint, load_net
from gan_translate.errors import UserError
from gan_translate.models import TranslationModel, model_class

__all__ = ["Translator", "load_translator", "load_model", "resolve_checkpoint", "resolve_device", "uses_batch_stats",
           "is_bidirectional"]


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """'auto' or None -> CUDA when available, else CPU; anything else as torch understands it."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"option --device: '{device}' is not a device (auto, cpu, cuda, cuda:1, ...)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"option --device: '{device}' asked for, but CUDA is not available here")
    return dev


def resolve_checkpoint(path: str | Path, epoch: str = "latest") -> Path:
    """A checkpoint folder from a run folder (checkpoints/NAME) and ``epoch``, or a checkpoint folder itself."""
    path = Path(path)
    if (path / CONFIG_FILE).is_file() and any(path.glob("net_*.safetensors")):
        return path
    return find_checkpoint(path, epoch)


def is_bidirectional(model: TranslationModel | type[TranslationModel]) -> bool:
    """Models with a second generator for B -> A (CycleGAN's G_B) translate a batch given under the key "B"."""
    return "G_B" in model.inference_nets


def uses_batch_stats(model: nn.Module) -> bool:
    """True when a BatchNorm layer in training mode would mix the images of a batch (batch statistics)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules())


def load_model(path: str | Path, *, epoch: str = "latest", device: str | torch.device | None = None,
               eval_mode: bool = False) -> tuple[TranslationModel, Any, Path]:
    """Builds the model a checkpoint was trained as, with its inference networks loaded.

    Args:
        path: a run folder (checkpoints/NAME) or one checkpoint folder inside it.
        epoch: 'latest', an epoch number or a checkpoint folder name (when ``path`` is a run folder).
        device: 'auto' (default), 'cpu', 'cuda', ...
        eval_mode: dropout off and BatchNorm on running statistics. Off by default, as in the pix2pix/CycleGAN
            reference, whose pix2pix keeps dropout at test time (Isola et al. 2017, section 3.1).

    Returns:
        (model, its options, the checkpoint folder).
    """
    ckpt = resolve_checkpoint(path, epoch)
    config = ckpt / CONFIG_FILE
    if not config.is_file():  # older layouts kept config.yaml in the run folder only
        config = ckpt.parent / CONFIG_FILE
    if not config.is_file():
        raise UserError(f"checkpoint {ckpt} has no {CONFIG_FILE}: cannot tell which model it holds")
    name = read_yaml(config).get("model")
    if not name:
        raise UserError(f"{config} does not name its model (key 'model')")
    cls = model_class(str(name))
    options = load_options(cls.Options, config)
    model = cls(options, training=False)
    for key in cls.inference_nets:
        load_net(model.nets[key], ckpt, key)
    model.to(resolve_device(device))
    model.train(not eval_mode)
    return model, options, ckpt


def _first_output(outputs: dict[str, torch.Tensor], preferred: str) -> torch.Tensor:
    if preferred in outputs:
        return outputs[preferred]
    if not outputs:
        raise RuntimeError("the model's translate() returned no image")
    return next(iter(outputs.values()))


class Translator:
    """A callable that translates one PIL image (any size, grey or colour) into a PIL image of the same size.

    Args:
        model: a model from ``load_model``.
        options: its options (channels, direction).
        seed: fixes dropout noise (pix2pix keeps dropout on at test time unless ``eval_mode``); None leaves it random.
    """

    def __init__(self, model: TranslationModel, options: Any, *, seed: int | None = 0) -> None:
        self.model = model
        self.options = options
        self.seed = seed

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _tensor(self, image: Image.Image | str | Path, channels: int) -> torch.Tensor:
        if isinstance(image, (str, Path)):
            from gan_translate.data import load_image

            image = load_image(image, channels)
        if not isinstance(image, Image.Image):
            raise TypeError(f"expected a PIL image or a path, got {type(image).__name__}")
        image = image.convert("L" if channels == 1 else "RGB")
        return pil_to_tensor(image)[None].to(self.device)

    @torch.no_grad()
    def __call__(self, image: Image.Image | str | Path, *, direction: str = "AtoB",
                 style: Image.Image | str | Path | None = None) -> Image.Image:
        """Translates ``image``; ``direction`` 'BtoA' uses a CycleGAN's second generator; style models need ``style``.

        'AtoB' means the way the model was trained (its ``--direction`` already decided which half is the input).
        """
        o = self.options
        if direction not in ("AtoB", "BtoA"):
            raise UserError(f"direction must be AtoB or BtoA, got '{direction}'")
        if direction == "BtoA" and not is_bidirectional(self.model):
            raise UserError(f"model {self.model.name} translates one way only (direction AtoB)")
        key, channels, preferred = ("B", o.output_nc, "fake_A") if direction == "BtoA" else ("A", o.input_nc, "fake_B")
        batch: dict[str, Any] = {key: self._tensor(image, channels)}
        if self.model.needs_style:
            if style is None:
                raise UserError(f"model {self.model.name} needs a style image: t(content, style=image)")
            batch["style"] = self._tensor(style, 3)
            preferred = "stylized"
        if self.seed is not None:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                torch.manual_seed(self.seed)
                out = _first_output(self.model.translate(batch), preferred)
        else:
            out = _first_output(self.model.translate(batch), preferred)
        return tensor_to_pil(out[0])


def load_translator(path: str | Path, *, epoch: str = "latest", device: str | torch.device | None = None,
                    eval_mode: bool = False, seed: int | None = 0) -> Translator:
    """``load_translator("checkpoints/NAME")(pil_image) -> pil_image``; see ``load_model`` for the arguments."""
    model, options, _ = load_model(path, epoch=epoch, device=device, eval_mode=eval_mode)
    return Translator(model, options, seed=seed)
