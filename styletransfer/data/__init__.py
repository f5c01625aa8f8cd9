"""Data: image files (images), transforms, content/style datasets, the Lightning datamodules (folders, prepared
caches) and the sample set.

Each name is imported from its module (``styletransfer.data.images.load_rgb``), except the datamodules, which the
configs' ``_target_`` name here too (``styletransfer.data.ContentStyleDataModule``)."""

from styletransfer.runtime.lazy import lazy_exports

# The datamodules load Lightning: imported on first use, so reading images for inference never loads it.
__getattr__ = lazy_exports(
    __name__,
    {
        "CacheDataModule": "styletransfer.data.cache_datamodule",
        "ContentStyleDataModule": "styletransfer.data.datamodule",
        "SampleDataModule": "styletransfer.data.sample",
    },
)

__all__ = ["CacheDataModule", "ContentStyleDataModule", "SampleDataModule"]
