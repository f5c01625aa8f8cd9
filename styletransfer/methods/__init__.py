"""LightningModules, one per style-transfer method."""
