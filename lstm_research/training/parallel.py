"""Data parallelism over a device mesh with ``jax.sharding`` (one device is a mesh of size 1).

The batch (and any carried recurrent state, whose rows are the batch's streams) is split along
the mesh axis ``data``; params and optimizer state are replicated, or with ``model_axis > 1``
their last dimension is split along the axis ``model`` where it divides evenly. ``jax.jit``
then compiles one SPMD program with the collectives it needs.
"""
from __future__ import annotations

import errno
import os
import socket
import sys
import threading
import time

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lstm_research.errors import UserError


def initialize_distributed(cfg) -> None:
    """Multi-host: join the other processes with ``jax.distributed.initialize`` when
    ``parallel.coordinator_address`` is set (``host:port`` of process 0 with ``num_processes``
    and ``process_id``, or ``auto``: all three from the cluster's environment, e.g. Slurm's
    ``srun``). Once per process; a second call (another Trainer in the process) is a no-op.

    ``parallel.timeout_s`` bounds every wait on the others. :class:`UserError` (one line) for:
    process 0 given an address not its own or a port in use (at once), a coordinator that never
    answers (after the timeout), ``num_processes`` that differ between processes (all of them).
    Processes that wait for more processes than join (JAX would abort the process after its own
    timeout, with a C++ stack) print one ``error:`` line after ``timeout_s`` and exit with
    status 2 (a watchdog thread: JAX releases the GIL while it waits). Once joined, a failed
    collective raises (``run.py`` exits 4: a peer is lost), and a peer that stops answering ends
    the others after ``timeout_s`` without its heartbeats (JAX's coordination service).
    """
    address = cfg.coordinator_address
    if not address or jax.distributed.is_initialized():
        return
    timeout = int(cfg.timeout_s)
    where = (dict(coordinator_address=address, num_processes=cfg.num_processes,
                  process_id=cfg.process_id) if address != "auto" else {})
    if address != "auto":
        _precheck_coordinator(cfg, timeout)
    watchdog = threading.Timer(timeout, _not_all_joined, args=(cfg, timeout))
    watchdog.daemon = True
    watchdog.start()
    try:
        # JAX's own initialization timeout is later than the watchdog's: it aborts the process
        jax.distributed.initialize(**where, initialization_timeout=timeout + 60,
                                   heartbeat_timeout_seconds=timeout,
                                   shutdown_timeout_seconds=timeout)
    except (RuntimeError, ValueError) as e:
        detail = " ".join(str(e).split())
        if len(detail) > 300:
            detail = detail[:300] + "..."
        if address == "auto":
            who, hint = ("from the cluster's environment", "run it as srun (Slurm) or mpirun "
                         "(Open MPI) tasks, or give parallel.coordinator_address=host:port")
        else:
            who = f"process {cfg.process_id} of {cfg.num_processes}, coordinator {address}"
            hint = ("start every process with the same parallel.coordinator_address (process 0's "
                    "host and a free port) and parallel.num_processes, and its own process_id")
        raise UserError(f"jax.distributed.initialize ({who}) failed: {detail}; {hint}") from None
    finally:
        watchdog.cancel()
    _check_process_count(cfg, address)


def _not_all_joined(cfg, timeout: int) -> None:
    """The watchdog of :func:`initialize_distributed`: one line, exit status 2 (a user error)."""
    if cfg.coordinator_address == "auto":
        who = "all processes of this cluster job (from its environment)"
    else:
        who = (f"all parallel.num_processes={cfg.num_processes} processes (this is process "
               f"{cfg.process_id}, coordinator {cfg.coordinator_address})")
    sys.stdout.flush()
    print(f"error: not {who} joined within parallel.timeout_s={timeout}; start every process "
          "with the same coordinator address and num_processes, and process ids 0 to "
          "num_processes - 1", file=sys.stderr, flush=True)
    os._exit(2)


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


def replicate(mesh: Mesh, tree):
    """Every array of ``tree`` whole on every device (each process passes the same values)."""
    return jax.tree.map(lambda x: jax.device_put(np.asarray(x), NamedSharding(mesh, P())), tree)


def feed_batch(mesh: Mesh, tree):
    """A batch for a compiled step: :func:`shard_batch`, except on one device, where the step
    takes numpy as it is (an explicit ``device_put`` costs more host time than a batch-1 step),
    and for a batch whose rows the data axis does not divide (an epoch's smaller last batch:
    JSB's 229 training sequences in batches of 8 end with 5), which every device then runs
    whole, replicated: the same update or sums."""
    if (mesh.size == 1 and jax.process_count() == 1) or not divides(mesh, tree):
        return tree
    return shard_batch(mesh, tree)


def divides(mesh: Mesh, tree) -> bool:
    """Whether the mesh's data axis divides the rows of every array of the batch ``tree``."""
    n = mesh.shape["data"]
    return all(np.shape(a)[0] % n == 0 for a in jax.tree.leaves(tree) if np.ndim(a))


def param_sharding(mesh: Mesh, x) -> NamedSharding:
    m = mesh.shape["model"]
    if m > 1 and np.ndim(x) >= 1 and x.shape[-1] % m == 0:
        return NamedSharding(mesh, P(*([None] * (np.ndim(x) - 1)), "model"))
    return NamedSharding(mesh, P())


def shard_params(mesh: Mesh, tree):
    return jax.tree.map(lambda x: jax.device_put(x, param_sharding(mesh, x)), tree)


def _precheck_coordinator(cfg, timeout: int) -> None:
    """What can be checked before joining, where JAX would only abort the process after the
    timeout: process 0 runs the coordinator, so its host must be this machine and its port free;
    every other process waits (up to ``timeout``) for the coordinator's port to accept."""
    host, port = cfg.coordinator_address.rsplit(":", 1)
    host, port = host.strip("[]"), int(port)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise UserError(f"parallel.coordinator_address={cfg.coordinator_address!r}: host {host!r} "
                        f"does not resolve ({e.strerror or e})") from None
    family, _, _, _, sockaddr = infos[0]
    if cfg.process_id == 0:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((sockaddr[0], port))
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    raise UserError(f"parallel.coordinator_address={cfg.coordinator_address!r}: "
                                    f"port {port} is in use on this machine; choose a free "
                                    "port") from None
                raise UserError(f"parallel.coordinator_address={cfg.coordinator_address!r} is "
                                "not an address of this machine, but parallel.process_id=0 runs "
                                "the coordinator here; give process 0's own host") from None
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(sockaddr[:2], timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise UserError(f"no coordinator answered at parallel.coordinator_address="
                                f"{cfg.coordinator_address!r} within parallel.timeout_s={timeout} "
                                f"(process {cfg.process_id} of {cfg.num_processes}); start "
                                "process 0 with the same address, or fix the address") from None
            time.sleep(0.5)


def _check_process_count(cfg, address: str) -> None:
    """Every process's ``parallel.num_processes`` against the job's: JAX takes the count of
    process 0, so a process started with another one would otherwise run on silently."""
    from jax.experimental import multihost_utils

    actual = jax.process_count()
    claimed = (np.asarray(multihost_utils.process_allgather(np.int32(cfg.num_processes)))
               if address != "auto" else np.array([actual]))
    if (claimed != actual).any():
        raise UserError(f"parallel.num_processes differs between the processes: "
                        f"{sorted(set(claimed.tolist()))} (process 0, the coordinator, "
                        f"has {actual}); start every process with "
                        f"parallel.num_processes={actual}")
