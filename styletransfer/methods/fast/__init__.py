"""Fast neural style: a feed-forward image transformation network trained for one style (Johnson et al. 2016, with
Ulyanov et al.'s instance normalisation) or several (Dumoulin et al. 2017's conditional instance normalisation):
the network (``network``), its perceptual loss (``losses``), the LightningModule (``module``), model files
(``checkpoint``), the feed-forward model (``styler``) and the plugin (``plugin``)."""

from styletransfer.methods.fast.network import TransformerNet
from styletransfer.runtime.lazy import lazy_exports

# The LightningModule loads Lightning: imported on first use, so stylising never loads it.
__getattr__ = lazy_exports(__name__, {"FastStyleModule": "styletransfer.methods.fast.module"})

__all__ = ["FastStyleModule", "TransformerNet"]
