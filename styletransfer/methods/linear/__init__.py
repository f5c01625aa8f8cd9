"""Linear Style Transfer (Li et al., CVPR 2019): the transformation module (``transform``), the authors' loss
(``loss``), training it between a frozen VGG-19 and a frozen reconstruction decoder (``module``), its model files
(``checkpoint``), the feed-forward model (``styler``) and the plugin (``plugin``)."""

from styletransfer.methods.linear.transform import LinearTransform
from styletransfer.runtime.lazy import lazy_exports

# The LightningModule loads Lightning: imported on first use, so stylising never loads it.
__getattr__ = lazy_exports(__name__, {"LinearModule": "styletransfer.methods.linear.module"})

__all__ = ["LinearModule", "LinearTransform"]
