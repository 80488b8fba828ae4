"""gan_translate: image-to-image translation and style transfer on one PyTorch + Accelerate platform."""

__version__ = "0.1.0"
