"""pytorch/examples fast_neural_style saved models (``candy.pth``, ``mosaic.pth``, ``rain_princess.pth``, ``udnie.pth``,
or one of its own training runs): a ``TransformerNet`` state dict.

    python -m gan_translate import fast_style mosaic.pth --name mosaic

That network is this project's ``fast_style`` with ``--arch examples`` (reflection padding before every convolution,
affine instance norm, nearest x2 upsampling then a convolution, no output activation on RGB 0..255), so the tensors map
one to one: ``conv1.conv2d`` -> ``conv1.conv2d``, ``in1`` -> ``in1`` (a (1, C) row: one style), ``res1..res5`` ->
``res.0..4``, ``deconv1/2.conv2d`` -> ``up1/2.conv2d``, ``in4/in5`` -> ``in4/in5``, ``deconv3.conv2d`` ->
``conv_out.conv2d``. Files written by PyTorch 0.3 carry ``running_mean``/``running_var`` of the instance norms, which
that project deletes before loading (its norms keep none); so are they here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from gan_translate.errors import UserError
from gan_translate.importers.common import (
    StateDict,
    build_options,
    load_into,
    read_state_dict,
    write_run,
)
from gan_translate.models import create_model

_RUNNING = re.compile(r"in\d+\.running_(mean|var)$")


def translate_keys(state: StateDict) -> StateDict:
    """TransformerNet keys and shapes -> ``FastStyleNet`` ones (norm vectors become one-style rows)."""
    out: StateDict = {}
    for key, value in state.items():
        if _RUNNING.search(key):
            continue  # the running statistics of PyTorch 0.3's InstanceNorm: unused, dropped as the source does
        new = re.sub(r"^res(\d)\.", lambda m: f"res.{int(m.group(1)) - 1}.", key)
        new = new.replace("deconv1.", "up1.").replace("deconv2.", "up2.").replace("deconv3.", "conv_out.")
        if re.search(r"(^|\.)in\d\.(weight|bias)$", new):
            value = value.reshape(1, -1)
        out[new] = value
    return out


def _parser():
    from gan_translate.importers import ImportParser

    p = ImportParser(prog="python -m gan_translate import fast_style",
                     description="Import a pytorch/examples fast_neural_style TransformerNet (.pth/.model).")
    p.add_argument("weights", help="the saved model, e.g. mosaic.pth")
    p.add_argument("--style_name", default="", help="the style's name in the run (default: the file's stem)")
    return p


def import_fast_style(argv: Sequence[str]) -> Path:
    args = _parser().parse_args(list(argv))
    path = Path(args.weights).expanduser()
    state = read_state_dict(path, "option weights")
    if "conv1.conv2d.weight" not in state:
        raise UserError(f"{path} is not a fast_neural_style TransformerNet (no 'conv1.conv2d.weight')")
    width = int(state["conv1.conv2d.weight"].shape[0])
    name = args.style_name or path.stem
    options = build_options("fast_style", {"name": args.name, "checkpoints_dir": args.checkpoints_dir,
                                           "arch": "examples", "ngf": width, "style_names": name,
                                           "load_size": 256, "crop_size": 256})
    model = create_model(options, training=False)
    net = load_into(model.nets["transformer"], translate_keys(state), source=str(path),
                    layout="fast_neural_style TransformerNet (fast_style --arch examples)")
    run = write_run(options, {"transformer": net}, source=str(path), fine_tune=False,
                    reason="the imported network has no style image to train against; train a new run instead")
    print(f"imported the fast_neural_style network {path.name} (style '{name}', width {width}) -> {run}")
    return run
