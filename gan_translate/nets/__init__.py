"""Networks: shared layers, generators (ResNet, U-Net) and patch discriminators, each buildable by name."""

from gan_translate.nets.discriminators import (
    NLayerDiscriminator,
    PatchDiscriminator,
    PatchLayer,
    PixelDiscriminator,
    build_discriminator,
    n_layer_recipe,
    pixel_recipe,
)
from gan_translate.nets.generators import ResnetBlock, ResnetGenerator, UnetBlock, UnetGenerator, build_generator
from gan_translate.nets.layers import (
    NORM_LAYERS,
    bare,
    conv_bias,
    init_weights,
    norm_layer,
    pad_to_multiple,
    run_padded,
    set_requires_grad,
)

__all__ = [
    "NORM_LAYERS",
    "NLayerDiscriminator",
    "PatchDiscriminator",
    "PatchLayer",
    "PixelDiscriminator",
    "ResnetBlock",
    "ResnetGenerator",
    "UnetBlock",
    "UnetGenerator",
    "bare",
    "build_discriminator",
    "build_generator",
    "conv_bias",
    "init_weights",
    "n_layer_recipe",
    "norm_layer",
    "pad_to_multiple",
    "pixel_recipe",
    "run_padded",
    "set_requires_grad",
]
