"""Export a trained generator to ONNX: ``python -m gan_translate export --name NAME --format onnx [--output FILE]``.

The graph takes images in [-1, 1] (N, C, H, W) and returns the translation at the same size. Batch, height and width
are dynamic: the padding to the generator's stride (reflection, centred) and the crop back are part of the graph, as
in PyTorch, so any size at least half the stride on each side works. The generator is exported in eval mode (dropout
off, BatchNorm on its running statistics): an exported model is meant to be deterministic.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gan_translate import config
from gan_translate.config import choice, opt
from gan_translate.errors import UserError
from gan_translate.extras import from_source_checkout, install_hint
from gan_translate.inference import load_model

__all__ = ["ExportOptions", "StridePadded", "export_graph", "export_onnx", "export_command", "EXPORT_FORMATS"]


class StridePadded(nn.Module):
    """A generator body behind a trace-friendly pad-to-stride and crop-back, computed from the input's shape.

    ``PaddedGenerator.forward`` decides with Python branches (pad or not, reflect or replicate), which tracing would
    freeze at the example's size; here the pad is arithmetic on the traced sizes, so it follows the input.
    """

    def __init__(self, body: nn.Module, stride: int) -> None:
        super().__init__()
        self.body = body
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[2], x.shape[3]
        pad_h = (self.stride - height % self.stride) % self.stride
        pad_w = (self.stride - width % self.stride) % self.stride
        top, left = pad_h // 2, pad_w // 2  # centred, as pad_to_multiple does
        padded = F.pad(x, (left, pad_w - left, top, pad_h - top), mode="reflect")
        return self.body(padded)[:, :, top:top + height, left:left + width]


def exportable(net: nn.Module) -> nn.Module:
    """The network in a form whose traced graph keeps H and W dynamic."""
    stride, body = getattr(net, "stride", None), getattr(net, "model", None)
    if isinstance(stride, int) and isinstance(body, nn.Module) and stride > 1:
        return StridePadded(body, stride).eval()
    return net


def export_graph(model: nn.Module, key: str) -> nn.Module:
    """The module ``export_onnx`` traces for inference network ``key``: a model whose network takes more than the
    image (fast_style: its style) gives its own one-input graph; any other network goes through ``exportable``."""
    return model.exportable(key) if hasattr(model, "exportable") else exportable(model.nets[key])


EXPORT_FORMATS = ("onnx",)


@dataclass
class ExportOptions:
    """Export a trained generator (python -m gan_translate export)."""

    name: str = opt("", "the run to export: checkpoints_dir/name (required)")
    checkpoints_dir: str = opt("checkpoints", "where runs are saved")
    epoch: str = opt("latest", "checkpoint: 'latest', an epoch number or a checkpoint folder name")
    format: str = choice("onnx", EXPORT_FORMATS, "export format")
    output: str = opt("", "output file (default: net_<net>.onnx in the checkpoint folder)")
    net: str = opt("", "which inference network (default: the first, e.g. G or G_A; G_B for CycleGAN's B->A)")
    opset: int = opt(17, "ONNX opset version", minimum=9)

    def validate(self) -> None:
        if not self.name:
            raise UserError("option --name: required (the run to export, under --checkpoints_dir)")


def export_onnx(path: str | Path, output: str | Path | None = None, *, epoch: str = "latest", net: str = "",
                opset: int = 17, example_size: tuple[int, int] = (64, 64)) -> Path:
    """Exports one inference network of a run (or checkpoint folder) to ONNX; returns the file written."""
    model, options, ckpt = load_model(path, epoch=epoch, device="cpu", eval_mode=True)
    if model.needs_style:
        raise UserError(f"model {model.name} translates with a style image; ONNX export covers one-input generators")
    if not model.translates_with_one_net:
        raise UserError(f"model {model.name} translates through several networks ({', '.join(model.inference_nets)}); "
                        "ONNX export covers one-network generators")
    key = net or model.inference_nets[0]
    if key not in model.inference_nets:
        raise UserError(f"option --net: '{key}' is not an inference network of {model.name} "
                        f"(choose from {', '.join(model.inference_nets)})")
    channels = options.output_nc if key == "G_B" else options.input_nc
    target = Path(output) if output else ckpt / f"net_{key}.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    graph = export_graph(model, key)
    example = torch.zeros(1, channels, *example_size)
    dynamic = {0: "batch", 2: "height", 3: "width"}
    # The TorchScript-based exporter: it traces the shape arithmetic of StridePadded symbolically in about a second;
    # the dynamo exporter needs onnxscript and is an order of magnitude slower for these networks.
    if importlib.util.find_spec("onnx") is None:
        raise UserError("ONNX export needs the onnx package: pip install onnx" +
                        (f' (part of the dev extra: {install_hint("dev")})' if from_source_checkout() else ""))
    try:
        torch.onnx.export(graph, (example,), str(target), input_names=["image"], output_names=["translated"],
                          dynamic_axes={"image": dynamic, "translated": dynamic}, opset_version=opset, dynamo=False)
    except ModuleNotFoundError as err:
        raise UserError(f"ONNX export needs the onnx package: pip install onnx ({err.name} missing)") from None
    return target


def export_command(argv: Sequence[str], prog: str = "python -m gan_translate export") -> int:
    """The ``export`` command."""
    argv = list(argv)
    if config.wants_help(argv):
        config.build_parser(ExportOptions, prog).print_help()
        return 0
    o: ExportOptions = config.parse_options(ExportOptions, argv, prog)
    target = export_onnx(Path(o.checkpoints_dir) / o.name, o.output or None, epoch=o.epoch, net=o.net,
                         opset=o.opset)
    print(f"exported {o.net or 'the generator'} of {o.name} to {target}")
    return 0
