"""Model states per GPU under ZeRO: the paper's formulas, DeepSpeed's estimators, and what
DeepSpeed's optimizers allocate. Torch-free; DeepSpeed itself is never imported.

- :func:`zero_paper_bytes`: Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward
  Training Trillion Parameter Models", Figure 1 / Section 5.1: with mixed-precision Adam
  (2 bytes of fp16 weights, 2 of fp16 gradients, K = 12 of fp32 masters, momentum and
  variance) per parameter, N data-parallel ranks: baseline (2 + 2 + K)P = 16P, P_os
  4P + KP/N, P_os+g 2P + (2 + K)P/N, P_os+g+p (2 + 2 + K)P/N.
- :func:`estimate_zero2_model_states_mem_needs`, :func:`estimate_zero3_model_states_mem_needs`:
  DeepSpeed's own estimators, reimplemented line for line from
  ``deepspeed/runtime/zero/stage_1_and_2.py`` and ``deepspeed/runtime/zero/stage3.py``
  (deepspeedai/DeepSpeed at edaa722, 2026-08): model states only, with their
  ``additional_buffer_factor``.
- :func:`deepspeed_states`: the buffers ``DeepSpeedZeroOptimizer`` (stages 1, 2) and
  ``DeepSpeedZeroOptimizer_Stage3`` allocate, with the bucket sizes and offload of a
  :class:`ZeroConfig` (the ``zero_optimization`` section of a DeepSpeed config).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from memlens._errors import ConfigError, WorkloadError

#: ZeRO's K for mixed-precision Adam: fp32 master weights, momentum and variance.
ADAM_K = 12


def zero_paper_bytes(params: int, stage: int, dp: int, k: int = ADAM_K) -> int:
    """Model-state bytes per GPU from the ZeRO paper (see the module docstring), for
    ``stage`` 0 (plain data parallelism), 1 (P_os), 2 (P_os+g) or 3 (P_os+g+p); exact when
    ``dp`` divides the sharded terms (else rounded up, as a partition is)."""
    if stage not in (0, 1, 2, 3):
        raise ConfigError(f"ZeRO stage {stage}: use 0, 1, 2 or 3")
    weights, grads = 2 * params, 2 * params
    optim = k * params
    shard = _ceil_div
    if stage == 0:
        return weights + grads + optim
    if stage == 1:
        return weights + grads + shard(optim, dp)
    if stage == 2:
        return weights + shard(grads + optim, dp)
    return shard(weights + grads + optim, dp)


def estimate_zero2_model_states_mem_needs(
    total_params: int,
    num_gpus_per_node: int = 1,
    num_nodes: int = 1,
    cpu_offload: bool = True,
    additional_buffer_factor: float = 1.5,
) -> tuple[int, int]:
    """(host bytes per node, device bytes per GPU): DeepSpeed's
    ``estimate_zero2_model_states_mem_needs`` (``stage_1_and_2.py``), same arguments."""
    total_gpus = num_nodes * num_gpus_per_node
    if cpu_offload:
        gpu_mem = 2 * total_params
        cpu_mem = total_params * max(4 * total_gpus, 16) * additional_buffer_factor
    else:
        # 2 = params_16bit; 18 = 2 grads_16bit + 4 grads_32bit + 4 params_32bit + 8 Adam
        gpu_mem = 2 * total_params + int(18 * total_params / total_gpus)
        cpu_mem = total_params * 4 * num_gpus_per_node * additional_buffer_factor
    return int(cpu_mem), int(gpu_mem)


def estimate_zero3_model_states_mem_needs(
    total_params: int,
    largest_layer_params: int,
    num_gpus_per_node: int = 1,
    num_nodes: int = 1,
    cpu_offload: bool = True,
    cpu_offload_params: bool = True,
    zero_init: bool = True,
    additional_buffer_factor: float = 1.5,
) -> tuple[int, int, int]:
    """(host bytes per node, device bytes per GPU, largest layer's bytes): DeepSpeed's
    ``estimate_zero3_model_states_mem_needs`` (``stage3.py``), same arguments."""
    total_gpus = num_nodes * num_gpus_per_node
    gpus_factor = 1 / num_nodes
    largest_layer_memory = 4 * largest_layer_params
    if cpu_offload:
        if cpu_offload_params:
            gpu_mem = largest_layer_memory
            per_param = (
                18 * gpus_factor if zero_init else max(4 * num_gpus_per_node, 18 * gpus_factor)
            )
        else:
            gpu_mem = largest_layer_memory + int(2 * total_params / total_gpus)
            per_param = (
                16 * gpus_factor if zero_init else max(4 * num_gpus_per_node, 16 * gpus_factor)
            )
        cpu_mem = total_params * per_param * additional_buffer_factor
    else:
        gpu_mem = largest_layer_memory + int(18 * total_params / total_gpus)
        if zero_init:
            cpu_mem = largest_layer_params * 4 * num_gpus_per_node * additional_buffer_factor
        else:
            cpu_mem = total_params * 4 * num_gpus_per_node * additional_buffer_factor
    return int(cpu_mem), int(gpu_mem), largest_layer_memory


@dataclass(frozen=True)
class ZeroConfig:
    """DeepSpeed's ``zero_optimization`` settings memlens models (defaults as in
    ``deepspeed/runtime/zero/config.py``, ``DeepSpeedZeroConfig``).

    Sizes are element counts, as DeepSpeed's are. ``overlap_comm`` ``None`` is DeepSpeed's
    dynamic default: on for stage 3 only (``overlap_comm_valid``). ``allgather_bucket_size``
    allocates nothing: stages 1-2 gather the updated partitions into the flat bit16
    parameters themselves (``deepspeed/runtime/utils.py``, ``all_gather_dp_groups``:
    ``all_gather_into_tensor`` on the flat groups, or shards of them as views).
    """

    stage: int = 2
    offload_optimizer: str = "none"  # "none" | "cpu" (``offload_optimizer.device``)
    offload_param: str = "none"  # "none" | "cpu" (stage 3 only)
    reduce_bucket_size: int = 500_000_000
    allgather_bucket_size: int = 500_000_000
    contiguous_gradients: bool = True
    overlap_comm: bool | None = None
    stage3_prefetch_bucket_size: int = 50_000_000
    stage3_max_live_parameters: int = 1_000_000_000
    stage3_param_persistence_threshold: int = 100_000
    sub_group_size: int = 1_000_000_000

    def __post_init__(self) -> None:
        if self.stage not in (1, 2, 3):
            raise WorkloadError("deepspeed", self.stage, "stage must be 1, 2 or 3")
        for name in ("offload_optimizer", "offload_param"):
            if getattr(self, name) not in ("none", "cpu"):
                raise WorkloadError("deepspeed", getattr(self, name), f"{name}: none or cpu")
        if self.offload_param != "none" and self.stage != 3:
            raise WorkloadError("deepspeed", self.offload_param, "offload_param needs stage 3")

    @property
    def overlap(self) -> bool:
        return self.stage == 3 if self.overlap_comm is None else self.overlap_comm

    @classmethod
    def parse(cls, value: object) -> ZeroConfig:
        """From a :class:`ZeroConfig`, a dict (a whole DeepSpeed config or its
        ``zero_optimization`` section), a JSON file path, or ``"stage=3,offload_param=cpu"``;
        sizes may be written ``5e8``. ``offload_*`` take a device or a ``{"device": ...}``."""
        if isinstance(value, ZeroConfig):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            value = {"stage": value}
        if isinstance(value, str):
            text = value.strip()
            if text.endswith(".json"):
                try:
                    value = json.loads(Path(text).read_text())
                except (OSError, ValueError) as exc:
                    raise WorkloadError("deepspeed", value, f"cannot read it: {exc}") from None
            elif text.isdigit():
                value = {"stage": int(text)}
            else:
                items = {}
                for item in filter(None, (s.strip() for s in text.split(","))):
                    key, sep, val = item.partition("=")
                    if not sep:
                        raise WorkloadError("deepspeed", value, "use stage=3,offload_param=cpu")
                    items[key.strip()] = val.strip()
                value = items
        if not isinstance(value, dict):
            raise WorkloadError("deepspeed", value, "a ds_config.json, a dict or stage=N,key=v")
        section = value.get("zero_optimization", value)
        known = {f.name: f for f in fields(cls)}
        out: dict[str, Any] = {}
        for key, val in section.items():
            name = key if key in known else f"stage3_{key}"  # the un-prefixed aliases
            if name not in known:
                if key in _IGNORED:
                    continue
                raise WorkloadError("deepspeed", key, "unknown zero_optimization key")
            if isinstance(val, dict):  # offload_optimizer: {"device": "cpu", ...}
                val = val.get("device", "none")
            out[name] = _coerce(name, val, known[name].type)
        return replace(cls(), **out) if out else cls()


#: ``zero_optimization`` keys that change nothing memlens models.
_IGNORED = frozenset(
    {
        "reduce_scatter",
        "allgather_partitions",
        "round_robin_gradients",
        "stage3_gather_16bit_weights_on_model_save",
        "stage3_max_reuse_distance",
        "load_from_fp32_weights",
        "elastic_checkpoint",
        "ignore_unused_parameters",
    }
)


def _coerce(name: str, value: Any, kind: Any) -> Any:
    text = str(value).strip().lower()
    if "bool" in str(kind):
        if text in ("true", "1", "yes"):
            return True
        if text in ("false", "0", "no"):
            return False
        raise WorkloadError("deepspeed", value, f"{name} is true or false")
    if kind in (int, "int"):
        try:
            number = float(text)
        except ValueError:
            raise WorkloadError("deepspeed", value, f"{name} is a number") from None
        if number < 0 or number != int(number):
            raise WorkloadError("deepspeed", value, f"{name} is a non-negative integer")
        return int(number)
    return "none" if text in ("", "none", "null") else text


@dataclass(frozen=True)
class States:
    """Model states of one GPU, by category, and what is kept in host memory (per GPU).

    ``device`` keys are memlens categories (``parameters``, ``gradients``,
    ``optimizer_state``, ``collectives``); ``notes`` say where each term comes from.
    """

    device: dict[str, int]
    host: dict[str, int]
    notes: tuple[str, ...] = ()

    @property
    def device_bytes(self) -> int:
        return sum(self.device.values())

    @property
    def host_bytes(self) -> int:
        return sum(self.host.values())


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def deepspeed_states(
    params: int,
    largest_param: int,
    dp: int,
    config: ZeroConfig,
    *,
    bit16: bool = True,
    optimizer_bytes: int = 8,
    live_params: int | None = None,
    persistent_params: int = 0,
) -> States:
    """Model states per GPU as DeepSpeed's ZeRO optimizers allocate them.

    ``params``: this rank's model-parallel share of the parameters; ``largest_param``: the
    largest parameter's elements (the offload gradient staging buffer); ``bit16``: fp16/bf16
    training with fp32 masters (else fp32 training: the masters are the parameters);
    ``optimizer_bytes``: optimizer state per fp32 master element (Adam: 8);
    ``live_params`` (stage 3): the gathered parameters alive at once, capped by
    ``stage3_max_live_parameters``; ``persistent_params`` (stage 3): elements of parameters
    under ``stage3_param_persistence_threshold``, kept whole on every rank.

    Sources (deepspeedai/DeepSpeed at edaa722):

    - stages 1-2, ``stage_1_and_2.py``: the bit16 parameters stay whole (``bit16_groups_flat``);
      ``single_partition_of_fp32_groups`` holds the fp32 master partition (P/N, the
      partition padded to ``nccl_start_alignment_factor``) and the optimizer state is built on
      it; at ``step`` the partition's gradient is converted to fp32 (``single_grad_partition``).
      Stage 1 keeps full bit16 gradients in ``param.grad`` until the step; stage 2 copies
      each reduced gradient into ``grads_in_partition`` (P/N) and frees the rest. With
      ``contiguous_gradients`` the reduction goes through ``ipg`` bucket buffers of
      ``reduce_bucket_size`` elements, two with ``overlap_comm`` (``setup_buckets``).
      ``offload_optimizer``: masters, fp32 gradient partition, optimizer state and a bit16
      staging copy of the partition (``param_buffer_of_bit16_for_cpu_offload_groups``) live on
      the host; the device keeps ``temp_grad_buffer_for_gpu_offload`` (largest parameter).
    - stage 3, ``stage3.py``: bit16 partitions (``fp16_partitioned_groups_flat``, P/N), fp32
      masters per sub-group (``fp32_partitioned_groups_flat``) with their state,
      ``grad_partitions_flat_buffer`` (P/N, bit16), one ``ipg`` bucket of
      ``reduce_bucket_size``, the fp32 gradient of one sub-group at the step; gathered
      parameters are bounded by ``max_available_parameters_in_numel``
      (``partitioned_param_coordinator.py``). ``offload_param`` moves the bit16 partitions to
      the host, ``offload_optimizer`` the masters, state and gradient partitions.
    """
    if dp < 1:
        raise ConfigError("dp must be >= 1")
    low = 2 if bit16 else 4
    part = _ceil_div(params, dp)
    device: dict[str, int] = {}
    host: dict[str, int] = {}
    notes: list[str] = []
    masters = 4 * part if bit16 else 0  # fp32 training: the optimizer steps the parameters
    state = optimizer_bytes * part
    bucket_elems = config.reduce_bucket_size if config.contiguous_gradients else 0
    opt_side = host if config.offload_optimizer == "cpu" else device

    def add(where: dict[str, int], key: str, n: int) -> None:
        if n:
            where[key] = where.get(key, 0) + n

    if config.stage in (1, 2):
        add(device, "parameters", low * params)
        add(opt_side, "optimizer_state", masters + state)
        if config.stage == 1:
            add(device, "gradients", low * params)  # param.grad, whole, until the step
        elif config.offload_optimizer == "cpu":
            add(device, "gradients", low * largest_param)  # temp_grad_buffer_for_gpu_offload
        else:
            add(device, "gradients", low * part)  # grads_in_partition
        if bit16:
            add(opt_side, "gradients", 4 * part)  # single_grad_partition (fp32) at the step
        if config.offload_optimizer == "cpu" and bit16:
            add(host, "parameters", low * part)  # bit16 staging copy of the partition
        buffers = (2 if config.overlap else 1) * min(bucket_elems, params)
        add(device, "collectives", low * buffers)
        notes.append(
            f"ZeRO-{config.stage}: reduce buckets {2 if config.overlap else 1} x "
            f"{config.reduce_bucket_size:,} elements (capped at the parameters)"
        )
    else:
        param_side = host if config.offload_param == "cpu" else device
        add(param_side, "parameters", low * part)
        add(device, "parameters", low * persistent_params)
        live = config.stage3_max_live_parameters if live_params is None else live_params
        add(device, "parameters", low * min(live, config.stage3_max_live_parameters, params))
        add(opt_side, "optimizer_state", masters + state)
        add(opt_side, "gradients", low * part)  # grad_partitions_flat_buffer
        if bit16:  # fp32 gradient of one sub-group at the step
            add(opt_side, "gradients", 4 * min(config.sub_group_size, part))
        add(device, "collectives", low * min(bucket_elems, params))
        notes.append(
            f"ZeRO-3: gathered parameters at most {config.stage3_max_live_parameters:,} "
            f"elements live, prefetch {config.stage3_prefetch_bucket_size:,}; one reduce "
            f"bucket of {config.reduce_bucket_size:,} (capped at the parameters)"
        )
    if config.offload_optimizer == "cpu" or config.offload_param == "cpu":
        notes.append("host memory is per GPU; a node holds it once per local GPU")
    return States(device, host, tuple(notes))
