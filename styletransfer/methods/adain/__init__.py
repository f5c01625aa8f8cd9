"""AdaIN (Huang & Belongie 2017): the model and its one inference function (``model``), the LightningModule
(``module``), model files (``checkpoint``), inference on a device (``styliser``), evaluation candidates
(``candidate``) and the stylise command line (``cli``)."""

from styletransfer.methods.adain.model import AdaINDecoder, adain, stylise
from styletransfer.methods.adain.module import AdaINModule
from styletransfer.methods.adain.styliser import Styliser

__all__ = ["AdaINDecoder", "AdaINModule", "Styliser", "adain", "stylise"]
