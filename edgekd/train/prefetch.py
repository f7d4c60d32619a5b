"""Training batches prepared one step ahead in a background thread, so the device never waits for the disk.

The thread draws batch i+1 from the trajectory store's memory maps (numpy gathers release the GIL), pins it, and on
CUDA starts its host-to-device copy on a side stream while the device computes step i. The main thread only waits
on a CUDA event. Each batch carries the RNG state right after it was drawn, so a checkpoint saves the state of the
batches actually consumed (the thread runs ahead) and a resumed run draws exactly the batches an uninterrupted run
would have.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

Batch = dict[str, torch.Tensor]


@dataclass
class Prepared:
    batch: Batch
    rng_state: dict[str, Any]
    ready: Any = None  # a torch.cuda.Event when the copy ran on a side stream


def to_device(batch: Batch, device: torch.device, channels_last: bool = False) -> Batch:
    """Copy a batch to ``device`` (non-blocking from pinned memory); 4-D float images in channels_last if asked."""
    out = {}
    for key, value in batch.items():
        value = value.to(device, non_blocking=True)
        if channels_last and value.dim() == 4 and value.is_floating_point():
            value = value.contiguous(memory_format=torch.channels_last)
        out[key] = value
    return out


class Prefetcher:
    """Draws ``source.batch(size, rng)`` ahead of use (``depth`` batches) in a daemon thread.

    ``next()`` returns a :class:`Prepared` whose tensors are on ``device``. ``depth`` 0 draws synchronously in the
    calling thread (the exact same batches, no thread).
    """

    def __init__(self, source: Any, size: int, rng: np.random.Generator, device: torch.device, depth: int = 2,
                 channels_last: bool = False):
        self.source, self.size, self.rng, self.device = source, size, rng, device
        self.depth, self.channels_last = depth, channels_last
        self.cuda = device.type == "cuda"
        self._stream = torch.cuda.Stream(device=device) if self.cuda else None
        self._queue: queue.Queue[Prepared | BaseException] = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if depth > 0:
            self._thread = threading.Thread(target=self._work, name="edgekd-prefetch", daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------ producer
    def _draw(self) -> Prepared:
        batch = self.source.batch(self.size, self.rng)
        state = self.rng.bit_generator.state
        if not self.cuda:
            return Prepared(to_device(batch, self.device, self.channels_last), state)
        pinned = {k: (v if v.is_pinned() else v.pin_memory()) for k, v in batch.items()}
        with torch.cuda.stream(self._stream):
            moved = to_device(pinned, self.device, self.channels_last)
            ready = torch.cuda.Event()
            ready.record(self._stream)
        return Prepared(moved, state, ready)

    def _work(self) -> None:
        if self.cuda:
            torch.cuda.set_device(self.device)
        try:
            while not self._stop.is_set():
                item = self._draw()
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as exc:  # re-raised in the training thread, where the user sees it
            self._queue.put(exc)

    # ------------------------------------------------------------------ consumer
    def next(self) -> Prepared:
        if self._thread is None:
            item: Prepared | BaseException = self._draw()
        else:
            item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        if item.ready is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(item.ready)
            for value in item.batch.values():
                value.record_stream(current)  # the allocator must not reuse this memory until the step is done
        return item

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            while True:  # unblock a producer waiting on a full queue
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
            self._thread.join(timeout=5)
            self._thread = None


__all__ = ["Prefetcher", "Prepared", "to_device"]
