"""Fast neural style: a feed-forward image transformation network trained for one style (Johnson et al. 2016, with
Ulyanov et al.'s instance normalisation) or several (Dumoulin et al. 2017's conditional instance normalisation)."""

from styletransfer.methods.fast.module import FastStyleModule

__all__ = ["FastStyleModule"]
