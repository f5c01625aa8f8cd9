"""AdaIN (Huang & Belongie 2017): the model and its one inference function (``model``), the LightningModule
(``module``), model files (``checkpoint``), inference on a device, AdaIN's feed-forward model (``styliser``), its
tiled passes (``tiled``) and ONNX graphs (``onnx_graphs``), and its plugin (``plugin``)."""

from styletransfer.methods.adain.model import AdaINDecoder, adain, stylise
from styletransfer.methods.adain.styliser import Styliser
from styletransfer.runtime.lazy import lazy_exports

# The LightningModule loads Lightning: imported on first use, so stylising and exporting never load it.
__getattr__ = lazy_exports(__name__, {"AdaINModule": "styletransfer.methods.adain.module"})

__all__ = ["AdaINDecoder", "AdaINModule", "Styliser", "adain", "stylise"]
