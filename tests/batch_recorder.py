"""A Lightning model that records the batches it is given (the data path's tests)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch


class BatchRecorder(pl.LightningModule):
    """A one-parameter model that records every training batch it gets, as the model receives it (tensors cloned):
    what the data path hands a method, step by step."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[dict] = []

    def training_step(self, batch, batch_idx):
        self.seen.append({k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in batch.items()})
        return (self.weight - batch["content"].mean() + batch["style"].mean()).pow(2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)
