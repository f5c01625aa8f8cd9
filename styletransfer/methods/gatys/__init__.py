"""Neural Style (Gatys, Ecker & Bethge 2016): the image is the parameter. The LightningModule (``module``) and its
style losses (``losses``)."""

from styletransfer.methods.gatys.module import GatysModule

__all__ = ["GatysModule"]
