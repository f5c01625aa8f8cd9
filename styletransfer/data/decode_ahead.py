"""Decoding training batches on the GPU one batch ahead, in a background thread, while the current step runs.

torchvision's nvJPEG decode blocks its calling thread until the decoder's stream has finished (it releases the GIL
while it waits). Called from ``on_before_batch_transfer`` that wait sat between two training steps, with no new
work queued for the GPU. Lightning's training loop fetches one batch ahead; :class:`DecodeAhead` starts decoding
each batch the moment it is fetched, in one worker thread on a side CUDA stream, so batch k+1 is decoded while
step k is launched and runs. The loop's stream waits (on the GPU, not the host) for that batch only when it is used.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
from torch import Tensor

#: A batch decoder: (collated batch with encoded parts, device) -> the batch with those parts decoded there.
BatchDecoder = Callable[[dict[str, Any], torch.device], dict[str, Any]]


class PendingBatch:
    """A batch being decoded by :class:`DecodeAhead`; :meth:`result` hands it over, ready on the caller's stream."""

    def __init__(self, future: Future, device: torch.device) -> None:
        self._future = future
        self.device = device

    def result(self) -> dict[str, Any]:
        """The decoded batch (re-raising the decoder's error, if any). On CUDA the current stream is made to wait for
        the decode and its tensors are marked as used there, so their memory is not reused while it runs."""
        batch, event = self._future.result()
        if event is not None:
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(event)
            for value in batch.values():
                if isinstance(value, Tensor) and value.is_cuda:
                    value.record_stream(stream)
        return batch


class DecodeAhead:
    """Decodes batches in order in one worker thread, on its own CUDA stream where ``device`` is a GPU."""

    def __init__(self, decode: BatchDecoder, device: torch.device | str) -> None:
        self.decode = decode
        self.device = torch.device(device)
        self._pool: ThreadPoolExecutor | None = None
        self._stream: torch.cuda.Stream | None = None

    def start(self, batch: dict[str, Any]) -> PendingBatch:
        """Begin decoding ``batch`` (after those started before it) and return its handle at once."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode-ahead")
            if self.device.type == "cuda":
                self._stream = torch.cuda.Stream(self.device)
        return PendingBatch(self._pool.submit(self._decode, batch), self.device)

    def _decode(self, batch: dict[str, Any]) -> tuple[dict[str, Any], torch.cuda.Event | None]:
        if self._stream is None:
            return self.decode(batch, self.device), None
        with torch.cuda.stream(self._stream):
            decoded = self.decode(batch, self.device)
            event = torch.cuda.Event()
            event.record(self._stream)
        return decoded, event

    def close(self) -> None:
        """Finish the decodes in flight and stop the thread (a later :meth:`start` starts a new one)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
