"""Data parallelism over a device mesh with ``jax.sharding`` (one device is a mesh of size 1).

The batch (and any carried recurrent state, whose rows are the batch's streams) is split along
the mesh axis ``data``; params and optimizer state are replicated, or with ``model_axis > 1``
their last dimension is split along the axis ``model`` where it divides evenly. ``jax.jit``
then compiles one SPMD program with the collectives it needs.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lstm_research.errors import UserError


def initialize_distributed(cfg) -> None:
    """Multi-host: call ``jax.distributed.initialize`` when a coordinator address is given."""
    if cfg.coordinator_address:
        jax.distributed.initialize(coordinator_address=cfg.coordinator_address,
                                   num_processes=cfg.num_processes, process_id=cfg.process_id)


def make_mesh(model_axis: int = 1) -> Mesh:
    devices = np.array(jax.devices())
    if devices.size % model_axis:
        raise UserError(f"parallel.model_axis={model_axis} does not divide the "
                         f"{devices.size} devices")
    return Mesh(devices.reshape(-1, model_axis), ("data", "model"))


def global_batch_size(task_batch: int, cfg, mesh: Mesh) -> int:
    """The global batch: ``task.batch_size``, or ``batch_per_device`` x data-parallel devices."""
    n = mesh.shape["data"]
    batch = cfg.batch_per_device * n if cfg.batch_per_device else task_batch
    if batch % n:
        raise UserError(f"the global batch size {batch} is not divisible by the {n} devices of "
                         f"the mesh's data axis; choose a multiple of {n} (or set "
                         "parallel.batch_per_device)")
    return batch


def batch_sharding(mesh: Mesh, x) -> NamedSharding:
    return NamedSharding(mesh, P("data", *([None] * (np.ndim(x) - 1))))


def shard_batch(mesh: Mesh, tree):
    """Place a global host batch split along the batch dimension. Every process generates the
    same global batch (tasks are deterministic in the step); with several processes each one
    keeps only its own rows, which land on its own devices."""
    def put(x):
        x = np.asarray(x)
        if x.ndim == 0:
            return jax.device_put(x, NamedSharding(mesh, P()))
        n, i = jax.process_count(), jax.process_index()
        if n > 1:
            rows = x.shape[0] // n
            local = x[i * rows:(i + 1) * rows]
            return jax.make_array_from_process_local_data(batch_sharding(mesh, x), local,
                                                          x.shape)
        return jax.device_put(x, batch_sharding(mesh, x))
    return jax.tree.map(put, tree)


def feed_batch(mesh: Mesh, tree):
    """A batch for a compiled step: :func:`shard_batch`, except on one device, where the step
    takes numpy as it is (an explicit ``device_put`` costs more host time than a batch-1 step)."""
    if mesh.size == 1 and jax.process_count() == 1:
        return tree
    return shard_batch(mesh, tree)


def param_sharding(mesh: Mesh, x) -> NamedSharding:
    m = mesh.shape["model"]
    if m > 1 and np.ndim(x) >= 1 and x.shape[-1] % m == 0:
        return NamedSharding(mesh, P(*([None] * (np.ndim(x) - 1)), "model"))
    return NamedSharding(mesh, P())


def shard_params(mesh: Mesh, tree):
    return jax.tree.map(lambda x: jax.device_put(x, param_sharding(mesh, x)), tree)
