"""The optimiser named in ``train``: an optax chain and its learning-rate schedule."""
from __future__ import annotations

import optax

from snndist.config import TrainConfig

# train.lr_schedule -> the schedule after warm-up, from lr to 0 over the remaining steps where it decays.
SCHEDULES = {"constant": lambda lr, steps: optax.constant_schedule(lr),
             "cosine": lambda lr, steps: optax.cosine_decay_schedule(lr, steps),
             "linear": lambda lr, steps: optax.linear_schedule(lr, 0.0, steps)}

# train.optimizer -> the optax optimiser, given the schedule and the train config.
OPTIMIZERS = {"adam": lambda lr, t: optax.adam(lr, b1=t.b1, b2=t.b2, eps=t.eps),
              "adamw": lambda lr, t: optax.adamw(lr, b1=t.b1, b2=t.b2, eps=t.eps, weight_decay=t.weight_decay),
              "sgd": lambda lr, t: optax.sgd(lr, momentum=t.momentum or None)}


def lr_schedule(t: TrainConfig) -> optax.Schedule:
    """``t.lr`` after a linear warm-up of ``t.warmup_steps``; cosine and linear decay to 0."""
    main = SCHEDULES[t.lr_schedule](t.lr, t.steps - t.warmup_steps)
    if not t.warmup_steps:
        return main
    warmup = optax.linear_schedule(0.0, t.lr, t.warmup_steps)
    return optax.join_schedules([warmup, main], [t.warmup_steps])


def make_optimizer(t: TrainConfig) -> tuple[optax.GradientTransformation, optax.Schedule]:
    schedule = lr_schedule(t)
    opt = OPTIMIZERS[t.optimizer](schedule, t)
    if t.grad_clip > 0:
        opt = optax.chain(optax.clip_by_global_norm(t.grad_clip), opt)
    return opt, schedule
