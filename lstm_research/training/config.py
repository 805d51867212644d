"""The fields every experiment config has, with their defaults. An experiment config
(``configs/<name>.py``) starts from :func:`base_config` and changes what it needs."""
from __future__ import annotations

import ml_collections

from lstm_research import tasks


def base_config(task: str = "adding", **task_overrides) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.task = tasks.default_config(task, **task_overrides)

    c.model = ml_collections.ConfigDict(dict(
        cell="lstm",            # any cell string: "vanilla", "nfg", "lstm:forget_bias=1", ...
        hidden_size=128,
        width_multiple=1,       # >1: run at hidden_size rounded up to a multiple, the extra units
                                # held at zero: one program for a bucket of widths (models.width)
        num_layers=1,
        bidirectional=False,
        dropout=0.0,            # non-recurrent connections (Zaremba et al. 2014)
        input_dropout=0.0,      # variational, one mask per sequence (Gal & Ghahramani 2016)
        recurrent_dropout=0.0,  # variational on h (Gal & Ghahramani 2016)
        zoneout=0.0,            # Krueger et al. 2017
        embedding_size=0,       # language models: 0 = hidden_size
        tie_embeddings=False,
        parallel=False,         # minlstm/mingru: parallel scan over time
        remat=False,            # recompute activations in the backward pass (long sequences)
        unroll=1,               # time steps per compiled loop iteration
        fused="auto",           # LSTM family: the hand-written-backward layer ("auto" | True | False
                                # | "pallas": opt-in Pallas kernel, not measured on a GPU)
        wavefront=False,        # all layers in one loop, layer l at step t - l (opt-in, for GPUs)
        dtype="float32",        # or "bfloat16"
    ))

    c.train = ml_collections.ConfigDict(dict(
        optimizer="adam",       # sgd | momentum | nesterov | adam | rmsprop
        lr=1e-3,
        momentum=0.9,
        weight_decay=0.0,       # adam: AdamW's decoupled decay (times the lr); other
                                # optimizers: L2, decay * w added to the clipped gradient
        clip_norm=0.0,          # global-norm clipping; 0 = off
        steps=1000,             # used when epochs == 0
        epochs=0,               # epoch-based tasks: train this many epochs
        schedule="constant",    # constant | zaremba | plateau | cosine
        decay_after_epochs=0,   # zaremba: constant lr for this many epochs ...
        decay_factor=1.0,       # ... then divide it by this every epoch (plateau: on a plateau)
        plateau_patience=1,     # plateau: evaluations without improvement before decaying
        init="default",         # default (per cell) | uniform | glorot
        init_scale=0.1,         # uniform: U(-s, s) for every parameter (Zaremba et al. 2014),
                                # the cell's gate-bias switches (forget_bias=1) added to b
        input_noise=0.0,        # std of Gaussian noise added to inputs in training (Greff 2015)
        eval_every=0,           # steps between evaluations; 0 = once per epoch (epoch tasks)
        log_every=10,
        patience=0,             # early stopping: evaluations without improvement; 0 = off
        target=ml_collections.FieldReference(None, field_type=float),  # stop once valid reaches it
        checkpoint_every=0,     # extra checkpoints between evaluations (steps); 0 = at evals
        checkpoint_secs=0.0,    # >0: at evaluations, save only if this long since the last save
        gate_stats=False,       # evaluations also report gate statistics (training.diagnostics)
        steps_per_call=1,       # >1: up to this many updates per jitted call (same bits; one
                                # device, no carried state; pays at batch 1, see README)
    ))
    c.parallel = ml_collections.ConfigDict(dict(
        batch_per_device=0,     # 0: task.batch_size is the global batch
        coordinator_address="",  # multi-host: host:port of process 0, or "auto" (Slurm, MPI...)
        num_processes=1,
        process_id=0,
        timeout_s=120,          # multi-host: joining, and a peer's silence, fail after this long
        model_axis=1,           # >1: shard params along a 'model' mesh axis of this size
    ))
    return c
