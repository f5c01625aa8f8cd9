"""Universal style transfer (Li et al., NeurIPS 2017): reconstruction decoders for relu1_1 ... relu5_1 behind a
frozen VGG-19 (``decoders``), trained on content images alone (``module``), their model files (``checkpoint``), the
coarse-to-fine cascade of whitening and colouring (``cascade``), the feed-forward model (``styler``) and the plugin
(``plugin``)."""

from styletransfer.methods.wct.decoders import LEVELS, WCTDecoder
from styletransfer.runtime.lazy import lazy_exports

# The LightningModule loads Lightning: imported on first use, so stylising never loads it.
__getattr__ = lazy_exports(__name__, {"WCTModule": "styletransfer.methods.wct.module"})

__all__ = ["LEVELS", "WCTDecoder", "WCTModule"]
