"""Host (CPU) memory outside the device: the data pipeline, and offloaded optimizer state.

Closed form, from the workload and the bytes of one traced batch (``B``, the step's inputs
and targets as the model receives them; or ``batch x prod(sample_shape) x 4`` when
``sample_shape`` is given, float32 samples):

- data set held in memory: ``dataset_bytes``, or ``dataset_size x B / batch``;
- batches in flight, ``torch.utils.data.DataLoader``: with ``num_workers = 0`` the main
  process builds one batch at a time: ``B``; with workers, at most
  ``num_workers x prefetch_factor`` batches are outstanding (``prefetch_factor`` defaults
  to 2), each in shared memory until the main process takes it: ``workers x prefetch x B``;
- the batch the step is using: ``B``;
- ``pin_memory``: the pin-memory thread copies each batch into page-locked memory; the
  copies replace the shared-memory batches, plus one batch held twice while it is copied:
  ``B``;
- optimizer offload (:mod:`memlens.strategies.offload`): the traced host peak of the fp32
  master weights, fp32 gradients and optimizer state.

Known limitations: each worker is a separate Python process whose own footprint (the
interpreter, imported libraries, and pages of an in-memory data set that copy-on-write
duplicates when Python touches their reference counts) depends on the environment and is
not counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from memlens.workload import Workload

#: DataLoader's default ``prefetch_factor`` when ``num_workers > 0``.
DEFAULT_PREFETCH = 2
#: Bytes per element of ``sample_shape`` (float32, as the model receives samples).
SAMPLE_ELEMENT_BYTES = 4


@dataclass
class HostRow:
    """One line of the host-memory table."""

    what: str
    bytes: int
    formula: str


@dataclass
class HostMemory:
    """Host RAM needed next to the device, row by row."""

    rows: list[HostRow] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(r.bytes for r in self.rows)


def uses_host(workload: Workload) -> bool:
    """Whether the workload asks about host memory at all."""
    return bool(
        workload.dataset_size
        or workload.dataset_bytes
        or workload.num_workers
        or workload.pin_memory
        or workload.offload_optimizer
    )


def host_memory(workload: Workload, input_bytes: int, offload_bytes: int = 0) -> HostMemory | None:
    """The host-memory table of ``workload`` (``None`` if it asks nothing about the host);
    ``input_bytes`` is one traced batch, ``offload_bytes`` the traced host peak of an
    offloaded optimizer."""
    if not uses_host(workload):
        return None
    batch = workload.batch
    if workload.sample_shape is not None:
        per_batch = batch * math.prod(workload.sample_shape) * SAMPLE_ELEMENT_BYTES
        source = f"{batch} x {'x'.join(map(str, workload.sample_shape))} x 4 B"
    else:
        per_batch, source = input_bytes, "traced inputs"
    rows: list[HostRow] = []
    if workload.dataset_bytes is not None:
        rows.append(HostRow("data set in memory", workload.dataset_bytes, "dataset_bytes"))
    elif workload.dataset_size is not None:
        rows.append(
            HostRow(
                "data set in memory",
                math.ceil(workload.dataset_size * per_batch / batch),
                f"{workload.dataset_size} samples x batch bytes / {batch}",
            )
        )
    if workload.num_workers:
        prefetch = workload.prefetch_factor or DEFAULT_PREFETCH
        rows.append(
            HostRow(
                "batches prefetched by workers",
                workload.num_workers * prefetch * per_batch,
                f"{workload.num_workers} workers x {prefetch} prefetch x batch ({source})",
            )
        )
    else:
        rows.append(HostRow("batch being loaded", per_batch, f"1 x batch ({source})"))
    rows.append(HostRow("batch in use by the step", per_batch, f"1 x batch ({source})"))
    if workload.pin_memory:
        rows.append(HostRow("batch being pinned", per_batch, "1 x batch (page-locked copy)"))
    if offload_bytes:
        rows.append(
            HostRow(
                "offloaded optimizer",
                offload_bytes,
                "traced: fp32 master weights + fp32 gradients + optimizer state",
            )
        )
    return HostMemory(rows)
