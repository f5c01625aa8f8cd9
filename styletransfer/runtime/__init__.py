"""The bottom layer: errors, atomic files, config instantiation, loggers and wandb's mode. Imports no other layer."""
