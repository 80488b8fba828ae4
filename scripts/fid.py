"""FID (and KID) between two folders of images, like pytorch-fid's command line.

    python scripts/fid.py DIR_A DIR_B [--kid] [--inception_weights FILE] [--batch_size 32] [--device auto]

Same as `python -m gan_translate fid ...`. Images of any size are resized to 299x299 for the Inception-v3 of FID.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout without installing

from gan_translate.cli import fid_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(fid_main())
