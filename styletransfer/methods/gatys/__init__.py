"""Neural Style (Gatys, Ecker & Bethge 2016): the image is the parameter. The LightningModule (``module``), its
checked settings (``settings``), its style losses (``losses``), its coarse-to-fine schedule and EMA
(``schedule``) and the evaluation candidate (``candidate``)."""

from styletransfer.methods.gatys.module import GatysModule
from styletransfer.methods.gatys.settings import GatysSettings

__all__ = ["GatysModule", "GatysSettings"]
