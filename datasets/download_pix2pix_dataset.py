"""Download a paired (aligned) data set of the pix2pix paper (Isola et al., CVPR 2017) from its authors' host.

    python datasets/download_pix2pix_dataset.py facades                # -> datasets/facades/{train,val,test}
    python datasets/download_pix2pix_dataset.py maps --dest /data/     # -> /data/maps/...

Each image holds the pair side by side (A|B), the "aligned" format: train with `--dataroot datasets/facades`.
Cityscapes cannot be served from this host (its licence): get it from https://www.cityscapes-dataset.com and prepare
the pairs yourself (the pix2pix authors' prepare_cityscapes_dataset.py does this, or datasets/combine_A_and_B.py on
folders of label maps and photos).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from _download import run_download_cli

DATASETS = ("facades", "cityscapes", "maps", "edges2shoes", "edges2handbags", "night2day")
URL_TEMPLATE = "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/{name}.tar.gz"
NOTES = {
    "cityscapes": "cityscapes cannot be downloaded from the pix2pix host (licence): get it from "
    "https://www.cityscapes-dataset.com and pair its images with datasets/combine_A_and_B.py",
}


def main(argv: Sequence[str] | None = None) -> int:
    return run_download_cli(
        argv,
        description="Download a pix2pix data set (aligned A|B pairs).",
        names=DATASETS,
        url_template=URL_TEMPLATE,
        notes=NOTES,
        default_dest=Path(__file__).resolve().parent,
    )


if __name__ == "__main__":
    sys.exit(main())
