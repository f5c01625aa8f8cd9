"""Data: image files (images), transforms, content/style datasets, the Lightning datamodules (folders, prepared
caches) and the sample set."""

from styletransfer.data.datasets import (
    ContentStyleDataset,
    FolderSource,
    ImageSource,
    ValidationPairsDataset,
    choose_pairs,
    collate_content_style,
)
from styletransfer.data.images import (
    IMAGE_EXTENSIONS,
    DataDirError,
    ImageLoadError,
    find_images,
    load_image_tensor,
    load_rgb,
    save_image,
)
from styletransfer.data.transforms import CentreTransform, TrainTransform
from styletransfer.runtime.lazy import lazy_exports

# The datamodules load Lightning: imported on first use, so reading images for inference never loads it.
__getattr__ = lazy_exports(
    __name__,
    {
        "CacheDataModule": "styletransfer.data.cache_datamodule",
        "ContentStyleDataModule": "styletransfer.data.datamodule",
        "SampleDataModule": "styletransfer.data.sample",
        "make_sample_dataset": "styletransfer.data.sample",
    },
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "CacheDataModule",
    "CentreTransform",
    "ContentStyleDataModule",
    "ContentStyleDataset",
    "DataDirError",
    "FolderSource",
    "ImageLoadError",
    "ImageSource",
    "SampleDataModule",
    "TrainTransform",
    "ValidationPairsDataset",
    "choose_pairs",
    "collate_content_style",
    "find_images",
    "load_image_tensor",
    "load_rgb",
    "make_sample_dataset",
    "save_image",
]
