"""Peak memory (RSS) of translating one image against its size, whole and in tiles (test.py --tile).

    python scripts/tile_memory.py [--sizes 512,1024,2048,4096] [--tile 512] [--netG resnet_9blocks] [--ngf 64]

Each measurement runs in a fresh process (random weights, eval mode, no gradients, fp32, channels-last activations as
in test.py on a CPU) and reports its peak resident memory (ru_maxrss) and seconds; "whole" is skipped above
--max_whole pixels per side (it needs tens of GB at 4096).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import json, resource, sys, time, torch
from gan_translate.nets.channels_last import use_channels_last_inference
from gan_translate.nets.generators import build_generator
from gan_translate.tiles import TiledGenerator
size, tile, net_g, ngf = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
net = use_channels_last_inference(build_generator(net_g, 3, 3, ngf=ngf, norm="instance").eval())  # as test.py
if tile:
    net = TiledGenerator(net, tile)
x = torch.rand(1, 3, size, size) * 2 - 1
start = time.perf_counter()
with torch.inference_mode():
    out = net(x)
print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": time.perf_counter() - start, "shape": list(out.shape)}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="512,1024,2048,4096")
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--netG", default="resnet_9blocks")
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--max_whole", type=int, default=2048)
    args = p.parse_args()
    print(f"{args.netG}, ngf {args.ngf}, fp32, one image\n| size | whole: peak RSS MB, s | tiles of {args.tile}: "
          "peak RSS MB, s |\n|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        cells = []
        for tile in (0, args.tile):
            if tile == 0 and size > args.max_whole:
                cells.append("not run")
                continue
            done = subprocess.run([sys.executable, "-c", CHILD, str(size), str(tile), args.netG, str(args.ngf)],
                                  capture_output=True, text=True, check=False)
            if done.returncode != 0:
                cells.append(f"failed ({done.stderr.strip().splitlines()[-1][:60]})")
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            cells.append(f"{r['rss_mb']:.0f} MB, {r['seconds']:.1f} s")
        print(f"| {size} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
