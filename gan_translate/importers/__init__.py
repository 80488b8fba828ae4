"""``python -m gan_translate import <source> ...``: other projects' weights as ordinary run folders.

    python -m gan_translate import reference latest_net_G.pth --model cyclegan --name horse2zebra
    python -m gan_translate import reference checkpoints/myrun --name myrun
    python -m gan_translate import adain --decoder decoder.pth --vgg vgg_normalised.pth --name adain_official
    python -m gan_translate import tpfr 200_net_G.pth --name tpfr_official
    python -m gan_translate import cut latest_net_G.pth --name h2z_cut
    python -m gan_translate import fast_style mosaic.pth --name mosaic

One module per source project. Each reads the files with ``torch.load(weights_only=True)`` (``common``), works out the
architecture from the keys, loads the tensors into our networks and writes a run folder (config.yaml, ``epoch_000/``
with safetensors, LATEST) that test.py, ``load_translator`` and ``export`` use unchanged.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Sequence

from gan_translate.config import CommandParser
from gan_translate.errors import UserError

# source name -> (module, function)
SOURCES = {
    "reference": ("gan_translate.importers.reference", "import_reference"),
    "adain": ("gan_translate.importers.adain", "import_adain"),
    "tpfr": ("gan_translate.importers.tpfr", "import_tpfr"),
    "cut": ("gan_translate.importers.cut", "import_cut"),
    "fast_style": ("gan_translate.importers.fast_style", "import_fast_style"),
}

USAGE = """usage: python -m gan_translate import <source> ...

sources:
  reference  pix2pix/CycleGAN reference (junyanz): a generator .pth (published models) or a run folder
             python -m gan_translate import reference latest_net_G.pth --model cyclegan --name horse2zebra
  adain      naoto0804/pytorch-AdaIN: decoder.pth (or decoder_iter_N.pth.tar) + vgg_normalised.pth
             python -m gan_translate import adain --decoder decoder.pth --vgg vgg_normalised.pth --name adain
  cut        taesungp/contrastive-unpaired-translation: latest_net_G.pth (published) or a run folder (G, D, F)
             python -m gan_translate import cut latest_net_G.pth --name h2z_cut
  tpfr       nnaisense/conditional-style-transfer: 200_net_G.pth (+ 200_net_D.pth)
             python -m gan_translate import tpfr 200_net_G.pth --name tpfr
  fast_style pytorch/examples fast_neural_style: a saved TransformerNet (candy.pth, mosaic.pth, ...)
             python -m gan_translate import fast_style mosaic.pth --name mosaic

`python -m gan_translate import <source> --help` lists a source's options."""


class ImportParser(CommandParser):
    """The parser of an import source (errors name the source's command). Every import writes a run folder, so the
    options naming it (``--name``, ``--checkpoints_dir``) are added here for all sources."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.error_prefix = f"{self.prog}: "
        self.add_argument("--name", required=True, help="the new run: checkpoints_dir/name")
        self.add_argument("--checkpoints_dir", default="checkpoints",
                          help="where runs are saved (default: checkpoints)")


def import_command(argv: Sequence[str]) -> int:
    argv = list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    if argv[0] not in SOURCES:
        raise UserError(f"import: unknown source '{argv[0]}' (choose from {', '.join(SOURCES)})")
    module, function = SOURCES[argv[0]]
    run_dir: Path = getattr(importlib.import_module(module), function)(argv[1:])
    from gan_translate.config import read_yaml
    from gan_translate.models import model_class

    style = " --style_dir STYLES" if model_class(read_yaml(run_dir / "config.yaml")["model"]).needs_style else ""
    where = "" if run_dir.parent == Path("checkpoints") else f" --checkpoints_dir {run_dir.parent}"
    print(f"translate with: python test.py --name {run_dir.name}{where} --dataroot DIR --dataset_mode single{style}")
    return 0
