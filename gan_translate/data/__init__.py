"""Data pipeline: safe image I/O, reference preprocessing, aligned/unaligned/single datasets, a seeded sampler."""

from gan_translate.data.datasets import (
    DATASET_MODES,
    AlignedDataset,
    EpochSampler,
    ImageDataset,
    SingleDataset,
    UnalignedDataset,
    create_dataloader,
    create_dataset,
    item_rng,
    stable_hash,
)
from gan_translate.data.images import (
    IMG_EXTENSIONS,
    ImageReadError,
    is_image_file,
    list_images,
    load_image,
    pil_to_tensor,
    probe_image,
    save_image,
    tensor_to_pil,
)
from gan_translate.data.transforms import (
    PREPROCESS_MODES,
    ImageTransform,
    build_transform,
    get_params,
    needs_upscale,
    output_size,
    resized_size,
)
from gan_translate.data import styles  # noqa: F401, E402  (registers the "styles" dataset mode)

__all__ = [
    "DATASET_MODES",
    "IMG_EXTENSIONS",
    "PREPROCESS_MODES",
    "AlignedDataset",
    "EpochSampler",
    "ImageDataset",
    "ImageReadError",
    "ImageTransform",
    "SingleDataset",
    "UnalignedDataset",
    "build_transform",
    "create_dataloader",
    "create_dataset",
    "get_params",
    "is_image_file",
    "item_rng",
    "list_images",
    "load_image",
    "needs_upscale",
    "output_size",
    "pil_to_tensor",
    "probe_image",
    "resized_size",
    "save_image",
    "stable_hash",
    "tensor_to_pil",
]
