"""The optimiser named in ``train``: an optax chain and its learning-rate schedule."""
from __future__ import annotations

import optax

from snndist.config import TrainConfig


def lr_schedule(t: TrainConfig) -> optax.Schedule:
    """``t.lr`` after a linear warm-up of ``t.warmup_steps``; cosine and linear decay to 0."""
    decay_steps = t.steps - t.warmup_steps
    if t.lr_schedule == "cosine":
        main = optax.cosine_decay_schedule(t.lr, decay_steps)
    elif t.lr_schedule == "linear":
        main = optax.linear_schedule(t.lr, 0.0, decay_steps)
    else:
        main = optax.constant_schedule(t.lr)
    if not t.warmup_steps:
        return main
    warmup = optax.linear_schedule(0.0, t.lr, t.warmup_steps)
    return optax.join_schedules([warmup, main], [t.warmup_steps])


def make_optimizer(t: TrainConfig) -> tuple[optax.GradientTransformation, optax.Schedule]:
    schedule = lr_schedule(t)
    if t.optimizer == "adam":
        opt = optax.adam(schedule, b1=t.b1, b2=t.b2, eps=t.eps)
    elif t.optimizer == "adamw":
        opt = optax.adamw(schedule, b1=t.b1, b2=t.b2, eps=t.eps, weight_decay=t.weight_decay)
    elif t.optimizer == "sgd":
        opt = optax.sgd(schedule, momentum=t.momentum or None)
    else:
        raise ValueError(f"train.optimizer={t.optimizer!r}: unknown optimiser")
    if t.grad_clip > 0:
        opt = optax.chain(optax.clip_by_global_norm(t.grad_clip), opt)
    return opt, schedule
