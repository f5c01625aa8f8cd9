"""styletransfer: training, sweeping and evaluating neural style transfer with Lightning and Hydra."""

__version__ = "0.1.0"
