"""Download an unpaired data set of the CycleGAN paper (Zhu et al., ICCV 2017) from its authors' host.

    python datasets/download_cyclegan_dataset.py horse2zebra             # -> datasets/horse2zebra/{trainA,trainB,...}
    python datasets/download_cyclegan_dataset.py monet2photo --dest /data/

Each data set holds one folder per domain and split (trainA, trainB, testA, testB), the "unaligned" format: train with
`--dataroot datasets/horse2zebra`. ae_photos is a small set of test photos only. Cityscapes cannot be served from this
host (its licence): get it from https://www.cityscapes-dataset.com.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from _download import run_download_cli

DATASETS = (
    "apple2orange",
    "summer2winter_yosemite",
    "horse2zebra",
    "monet2photo",
    "cezanne2photo",
    "ukiyoe2photo",
    "vangogh2photo",
    "maps",
    "cityscapes",
    "facades",
    "iphone2dslr_flower",
    "ae_photos",
)
URL_TEMPLATE = "http://efrosgans.eecs.berkeley.edu/cyclegan/datasets/{name}.zip"
NOTES = {
    "cityscapes": "cityscapes cannot be downloaded from the CycleGAN host (licence): get it from "
    "https://www.cityscapes-dataset.com and put its label maps and photos in trainA/trainB/testA/testB",
}


def main(argv: Sequence[str] | None = None) -> int:
    return run_download_cli(
        argv,
        description="Download a CycleGAN data set (unpaired trainA/trainB/testA/testB folders).",
        names=DATASETS,
        url_template=URL_TEMPLATE,
        notes=NOTES,
        default_dest=Path(__file__).resolve().parent,
    )


if __name__ == "__main__":
    sys.exit(main())
