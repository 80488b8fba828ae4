"""Test a trained run: translate its test split (or any folder), write images, an HTML gallery and metrics.

    python test.py --name facades_pix2pix --dataroot datasets/facades      # PSNR, SSIM, L1, FID, KID
    python test.py --name h2z --dataroot ~/photos --dataset_mode single --direction AtoB
    python test.py --name NAME --metrics psnr,ssim --num_test 50 --eval

Results: results/NAME/<phase>_<epoch>/{images/, index.html, metrics.json}. `python test.py --help` lists the options;
the rest (networks, channels, direction) comes from the run's saved config.
"""

import sys

from gan_translate.cli import test_main

if __name__ == "__main__":
    sys.exit(test_main())
