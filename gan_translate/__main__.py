"""``python -m gan_translate <command>``."""

import sys

from gan_translate.cli import main

sys.exit(main())
