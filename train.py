"""Train a translation model.

    accelerate launch train.py --model cyclegan                      # built-in data, a run of a few minutes on CPU
    accelerate launch train.py --model pix2pix --dataroot datasets/facades --direction BtoA --name facades
    accelerate launch --multi_gpu --num_processes 2 train.py ...     # several processes (DDP)
    python train.py ...                                              # one process, no launcher
    tensorboard --logdir checkpoints                                 # losses, learning rates, image grids

Options: options/<model>.yaml holds each model's paper defaults; `python train.py --model NAME --help` lists them all.
"""

import sys

from gan_translate.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
