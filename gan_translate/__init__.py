"""gan_translate: image-to-image translation and style transfer on one PyTorch + Accelerate platform."""

__version__ = "0.2.0"

__all__ = ["__version__", "load_translator"]


def __getattr__(name: str):
    """``from gan_translate import load_translator`` without importing torch and the models at package import."""
    if name == "load_translator":
        from gan_translate.inference import load_translator

        return load_translator
    raise AttributeError(f"module 'gan_translate' has no attribute {name!r}")
