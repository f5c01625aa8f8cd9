"""Neural Style (Gatys, Ecker & Bethge 2016): the image is the parameter. The LightningModule (``module``), its
checked settings (``settings``), its style losses (``losses``), its coarse-to-fine schedule and EMA
(``schedule``) and its plugin (``plugin``: the evaluation candidate made from its config)."""

from styletransfer.runtime.lazy import lazy_exports

# The module loads Lightning: imported on first use, so the registry can import the plugin without it.
__getattr__ = lazy_exports(
    __name__,
    {"GatysModule": "styletransfer.methods.gatys.module", "GatysSettings": "styletransfer.methods.gatys.settings"},
)

__all__ = ["GatysModule", "GatysSettings"]
