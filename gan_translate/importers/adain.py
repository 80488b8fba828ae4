"""AdaIN weights of naoto0804/pytorch-AdaIN (converted from the authors' Torch AdaIN-style): ``decoder.pth`` (or a
training snapshot ``decoder_iter_N.pth.tar``, a plain torch.save despite the name) and the VGG it was trained against,
``vgg_normalised.pth`` (also spelt ``vgg_normalized.pth``).

    python -m gan_translate import adain --decoder decoder.pth --vgg vgg_normalised.pth --name adain_official

The decoder's convolutions sit at the same nn.Sequential indices as ours (1, 5, 8, ..., 28). It was trained on RGB in
[0, 1] while ours outputs [-1, 1], so its last convolution is rescaled (w x 2, b x 2 - 1: the same image). The VGG's
convolutions up to relu4_1 are copied into the run folder (``vgg_normalised.safetensors``), and the run uses them as
its encoder (``--vgg normalised``: 1x1 preprocessing conv, ceil-mode pooling, reflection padding) with the port's
sample-variance statistics (``sample_std``), so that the imported run gives the official outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import save_file

from gan_translate.errors import UserError
from gan_translate.file_modes import share_like_umask
from gan_translate.importers.common import build_options, load_into, read_state_dict, write_run
from gan_translate.models import create_model
from gan_translate.nets.vgg_weights import NORMALISED_INDEX, convert_vgg19

VGG_NAMES = ("vgg_normalised.pth", "vgg_normalized.pth")  # the code's default and the README's spelling
ENCODER_FILE = "vgg_normalised.safetensors"
RELU4_1 = 30  # the port keeps vgg[:31]: convolutions 0 .. 29


def _find_vgg(given: str, decoder: Path) -> Path:
    if given:
        return Path(given).expanduser()
    for folder in (decoder.parent, decoder.parent / "models"):
        for name in VGG_NAMES:
            if (folder / name).is_file():
                return folder / name
    raise UserError(f"import adain: no {' or '.join(VGG_NAMES)} beside {decoder}; pass --vgg FILE (the official "
                    "decoders only work with the VGG they were trained against)")


def _parser():
    from gan_translate.importers import ImportParser

    p = ImportParser(prog="python -m gan_translate import adain",
                     description="Import a pytorch-AdaIN decoder and its normalised VGG-19.")
    p.add_argument("--decoder", required=True, help="decoder.pth, iter_N.pth or decoder_iter_N.pth.tar")
    p.add_argument("--vgg", default="", help="vgg_normalised.pth (default: looked for beside the decoder)")
    return p


def import_adain(argv: Sequence[str]) -> Path:
    args = _parser().parse_args(list(argv))
    decoder_path = Path(args.decoder).expanduser()
    decoder_state = read_state_dict(decoder_path, "option --decoder")
    vgg_path = _find_vgg(args.vgg, decoder_path)
    vgg_state = read_state_dict(vgg_path, "option --vgg")
    converted = convert_vgg19(vgg_state, str(vgg_path))
    if converted is None or converted.kind != "normalised":
        kind = converted.kind if converted else "unknown"
        raise UserError(f"option --vgg: {vgg_path} is not AdaIN's normalised VGG-19 (no 1x1 '0.weight' of shape "
                        f"(3, 3, 1, 1); the file holds {kind} weights)")
    kept = ["0.weight", "0.bias"] + [f"{i}.{p}" for i in NORMALISED_INDEX if i < RELU4_1 for p in ("weight", "bias")]
    missing = [k for k in kept if k not in vgg_state]
    if missing:
        raise UserError(f"option --vgg: {vgg_path} stops before relu4_1 (no '{missing[0]}')")

    run_dir = Path(args.checkpoints_dir) / args.name
    options = build_options("adain", {"name": args.name, "checkpoints_dir": args.checkpoints_dir,
                                      "vgg_weights": str((run_dir / ENCODER_FILE).resolve()), "vgg": "normalised",
                                      "sample_std": True})
    run_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: vgg_state[k].float().contiguous() for k in kept}, str(run_dir / ENCODER_FILE))
    share_like_umask(run_dir / ENCODER_FILE)
    model = create_model(options, training=True)
    decoder = load_into(model.nets["decoder"], decoder_state, source=str(decoder_path), layout="AdaIN decoder")
    with torch.no_grad():  # [0, 1] -> [-1, 1]: 2 x - 1 folded into the last convolution
        last = decoder[-1]
        last.weight.mul_(2)
        last.bias.mul_(2).sub_(1)
    run = write_run(options, {"decoder": decoder}, source=str(decoder_path), fine_tune=True)
    print(f"imported the AdaIN decoder {decoder_path.name} with the encoder {vgg_path.name} (normalised VGG-19 to "
          f"relu4_1, copied to {run / ENCODER_FILE}) -> {run}")
    return run
