"""Speed and memory benchmark of the training step (pix2pix, CycleGAN), as `python -m gan_translate bench`.

    python scripts/bench.py [--models pix2pix,cyclegan] [--sizes 128,256] [--batch_sizes 1] [--iters 5]
                            [--device cpu|cuda] [--mixed_precision no|bf16|fp16] [--channels_last] [--compile]
                            [--checkpointing] [--json OUT.json]

Prints a Markdown table (s/iter, images/s, GFLOP/iter, GFLOP/s, fraction of the matmul peak, peak memory, inference
images/s) and writes the full results as JSON.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout without installing

from gan_translate.cli import bench_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(bench_main())
