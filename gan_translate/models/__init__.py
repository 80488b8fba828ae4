"""Models by name: ``@register_model("name")`` on a ``TranslationModel`` subclass, ``create_model(options)`` builds one.

Adding a model is one file here (imported below so that it registers), one YAML in options/, and its tests.
"""

from gan_translate.models.base import MODELS, StepContext, TranslationModel, create_model, model_class, register_model
from gan_translate.models import adain, cut, cyclegan, fast_style, mixgan, pix2pix, tpfr  # noqa: F401  (registration)

__all__ = ["MODELS", "StepContext", "TranslationModel", "create_model", "model_class", "register_model"]
