"""Training loop for epsilon-prediction denoisers: AdamW, EMA, validation early stopping, DDP, AMP."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from normcore._utils.device import autocast_dtype
from normcore._utils.distributed import distributed_context
from normcore._utils.progress import Progress
from normcore._utils.threads import adapt_threads
from normcore.diffusion.ema import EMA
from normcore.diffusion.schedule import NoiseSchedule


@dataclass
class TrainConfig:
    """Optimisation settings. ``epochs=None`` picks the auto budget (:func:`planned_epochs`): ``auto_steps`` optimiser
    steps, or ``auto_epochs`` passes over the training rows where that is more (from about 10,000 training rows at the
    default batch; why: BENCHMARKS.md).

    Early stopping scales with the run: the validation loss is evaluated every ``eval_every_steps`` steps
    (``None``: 1/40 of the planned steps, between 25 and 300), and training stops once the best evaluation is
    ``patience`` evaluations and ``patience_fraction`` x its own step behind (:func:`patience_steps`), so a
    run whose best comes early stops early, and one still improving late gets proportionally longer. An
    evaluation counts as better only when it is ``min_improvement`` below the best so far.

    The weights kept are those of the **latest** evaluation within ``min_improvement`` of the lowest validation loss
    seen: states that validation cannot tell apart from the best are equally good by its measure, and the later one
    has trained longer at a lower learning rate (what that buys on the curves: BENCHMARKS.md). Where the loss rises
    (over-fitting) the kept state stays at the last one before the rise. Step 0 is a candidate too: the untrained
    denoiser (the networks start with a zero output, so under a Gaussian-residual parameterisation it is the exact
    Gaussian denoiser alone), kept when no trained state beats it by ``min_improvement``, or a closed-form alternative
    given to :func:`train_denoiser`, which the caller weighs against the kept trained state (a small cohort's network
    can move well-fitted marginals more than it adds; BENCHMARKS.md).
    """

    epochs: int | None = None
    auto_steps: int = 6000
    auto_epochs: int = 160
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    ema_decay: float = 0.998
    warmup_steps: int = 200
    patience: int = 8
    eval_every_steps: int | None = None
    patience_fraction: float = 0.5
    min_improvement: float = 1e-4
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def planned_epochs(cfg: TrainConfig, steps_per_epoch: int) -> int:
    """Epochs of a run of ``steps_per_epoch`` optimiser steps per epoch: ``cfg.epochs`` when set, else the auto budget,
    the more of ``auto_steps`` steps and ``auto_epochs`` epochs. The learning rate's cosine decay spans the budget and
    early stopping ends the run where validation stops improving, so the budget is a ceiling on steps, not a count."""
    if cfg.epochs:
        return cfg.epochs
    return max(1, math.ceil(cfg.auto_steps / steps_per_epoch), cfg.auto_epochs)


def evaluation_interval(cfg: TrainConfig, total_steps: int) -> int:
    """Optimiser steps between validation evaluations (see :class:`TrainConfig`)."""
    if cfg.eval_every_steps:
        return cfg.eval_every_steps
    return int(min(300, max(25, total_steps // 40)))


def patience_steps(cfg: TrainConfig, every: int, best_step: int) -> int:
    """Steps without improvement after which training stops, for a best evaluation at ``best_step``."""
    return int(max(cfg.patience * every, cfg.patience_fraction * best_step))


@dataclass
class ValidationRecord:
    """What early stopping remembers of the validation losses seen (see :class:`TrainConfig`).

    ``best_step``: the last evaluation more than ``min_improvement`` below the best before it (the patience clock runs
    from it);
    ``kept_step``: the latest evaluation within ``min_improvement`` of the lowest loss, whose weights are returned
    (0: the untrained denoiser's).
    """

    min_improvement: float
    best_val: float = math.inf
    best_step: int = 0
    lowest_val: float = math.inf
    kept_val: float = math.inf
    kept_step: int = 0

    def observe(self, step: int, val_loss: float) -> bool:
        """Record an evaluation; True when its weights become the kept ones."""
        if val_loss < self.best_val - self.min_improvement:
            self.best_val, self.best_step = val_loss, step
        self.lowest_val = min(self.lowest_val, val_loss)
        if val_loss <= self.lowest_val + self.min_improvement:
            self.kept_val, self.kept_step = val_loss, step
            return True
        return False


def _validation_batch(x: torch.Tensor, c: torch.Tensor, schedule: NoiseSchedule, repeats: int, seed: int,
                      observed: torch.Tensor | None = None):
    """Fixed noise and stratified timesteps so validation losses are comparable across evaluations (with
    ``observed``, its mask of the entries the loss counts, repeated alike)."""
    g = torch.Generator().manual_seed(seed + 7919)
    n = x.shape[0]
    xr, cr = x.repeat(repeats, 1), c.repeat(repeats, 1)
    t = ((torch.arange(n * repeats) + torch.rand(n * repeats, generator=g)) / (n * repeats)
         * schedule.timesteps).long().clamp(max=schedule.timesteps - 1)
    t = t[torch.randperm(n * repeats, generator=g)]
    noise = torch.randn(xr.shape, generator=g)
    return xr, cr, t, noise, None if observed is None else observed.repeat(repeats, 1)


@torch.no_grad()
def _loss_on(net: nn.Module, batch, schedule: NoiseSchedule, device: torch.device, chunk: int = 8192) -> float:
    """Mean squared noise-prediction error over the batch's entries (its observed ones, when it has a mask)."""
    x, c, t, noise, observed = batch
    total = 0.0
    for s in range(0, x.shape[0], chunk):
        xs, cs, ts, ns = (v[s:s + chunk].to(device) for v in (x, c, t, noise))
        pred = net(schedule.add_noise(xs, ns, ts), ts, cs).float()
        err = (pred - ns) ** 2
        total += float(err.sum() if observed is None else (err * observed[s:s + chunk].to(device)).sum())
    return total / (x.numel() if observed is None else max(float(observed.sum()), 1.0))


def train_denoiser(net: nn.Module, x_train: np.ndarray, c_train: np.ndarray, x_val: np.ndarray,
                   c_val: np.ndarray, schedule: NoiseSchedule, cfg: TrainConfig, device: torch.device,
                   progress: Progress, untrained: nn.Module | None = None, observed_train: np.ndarray | None = None,
                   observed_val: np.ndarray | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Train ``net`` with the epsilon-prediction loss; return the kept EMA state dict (:class:`ValidationRecord`) and
    a history.

    Incomplete rows (:mod:`~normcore.tabular.imputation`): ``x_train`` may be (K, n, D), K completions of the
    training rows, of which each row of a batch uses one drawn at random; ``observed_train`` / ``observed_val``
    ((n, D) booleans) restrict the loss to the observed entries (the imputed ones are inputs, never targets).
    Complete data (no masks, one completion) trains exactly as before.

    Step 0 is evaluated before training: ``untrained`` (a denoiser, e.g. a closed-form one around ``net``'s untrained
    network) or else ``net`` as initialised. Without ``untrained``, the state returned is the kept one, ``net``'s
    initial state when step 0 stays kept (``history["kept_step"] == 0``). With ``untrained``, step 0 is the caller's
    own denoiser and the caller chooses: the state returned is then always the kept *trained* state (the same rule
    over the trained evaluations alone, ``history["trained_step"]``), and ``history["kept_step"] == 0`` says that the
    validation loss prefers step 0.

    Under ``torchrun`` (an initialised process group) each rank trains on its own shard of every
    epoch and gradients are averaged by DistributedDataParallel; all ranks take the same early-stopping
    decision because validation is computed on identical data and noise.
    """
    rank, world = distributed_context()
    torch.manual_seed(cfg.seed + rank)
    gen = torch.Generator().manual_seed(cfg.seed)
    net = net.to(device)
    ema = EMA(net, cfg.ema_decay)
    model = net
    if world > 1:
        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None,
                                        find_unused_parameters=True)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    amp = autocast_dtype(device)

    xt = torch.as_tensor(x_train, dtype=torch.float32)
    xt = xt[None] if xt.ndim == 2 else xt  # (K, n, D): K completions of the rows
    ct = torch.as_tensor(c_train, dtype=torch.float32)
    mask_val = None if observed_val is None else torch.as_tensor(observed_val, dtype=torch.float32)
    val = _validation_batch(torch.as_tensor(x_val, dtype=torch.float32), torch.as_tensor(c_val, dtype=torch.float32),
                            schedule, repeats=max(1, 4096 // max(1, len(x_val))), seed=cfg.seed, observed=mask_val)
    n_draws, n = xt.shape[0], xt.shape[1]
    per_rank = math.ceil(n / world)
    batch = min(cfg.batch_size, per_rank)
    steps_per_epoch = max(1, per_rank // batch)
    epochs = planned_epochs(cfg, steps_per_epoch)
    total_steps = epochs * steps_per_epoch
    def lr_factor(s: int) -> float:  # linear warm-up, then cosine decay to 10%
        cosine = 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps))
        return min(1.0, (s + 1) / cfg.warmup_steps) * (0.1 + 0.9 * cosine)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    xt_dev, ct_dev = xt.to(device), ct.to(device)
    mask_dev = None if observed_train is None else torch.as_tensor(observed_train, dtype=torch.float32,
                                                                   device=device)
    report_every = max(1, min(20, total_steps // 100))

    history: dict = {"step": [], "epoch": [], "train_loss": [], "val_loss": [], "elapsed_s": []}
    record, step = ValidationRecord(cfg.min_improvement), 0
    step0 = untrained.to(device).eval() if untrained is not None else ema.shadow
    history["initial_val_loss"] = _loss_on(step0, val, schedule, device)  # step 0: before any training
    record.observe(0, history["initial_val_loss"])
    kept_state = {k: v.detach().clone() for k, v in ema.shadow.state_dict().items()}
    trained, trained_state = ValidationRecord(cfg.min_improvement), kept_state  # trained evaluations alone
    every = evaluation_interval(cfg, total_steps)
    running, running_n = 0.0, 0
    start = time.perf_counter()
    stopped_early = False
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=gen)[rank * per_rank:(rank + 1) * per_rank].to(device)
        model.train()
        for b in range(steps_per_epoch):
            idx = perm[b * batch:(b + 1) * batch]
            if n_draws == 1:
                x0 = xt_dev[0, idx]
            else:
                x0 = xt_dev[torch.randint(0, n_draws, (len(idx),), device=device), idx]
            c = ct_dev[idx]
            t = torch.randint(0, schedule.timesteps, (x0.shape[0],), device=device)
            noise = torch.randn_like(x0)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                pred = model(schedule.add_noise(x0, noise, t), t, c)
            if mask_dev is None:
                loss = ((pred.float() - noise) ** 2).mean()
            else:
                w = mask_dev[idx]
                loss = (((pred.float() - noise) ** 2) * w).sum() / w.sum().clamp_min(1.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            sched.step()
            ema.update(net, step)
            step += 1
            running += float(loss.detach())
            running_n += 1
            if step % every == 0 or step == total_steps:
                adapt_threads()  # the machine's load may have changed since the last evaluation
                val_loss = _loss_on(ema.shadow, val, schedule, device)
                history["step"].append(step)
                history["epoch"].append(epoch + 1)
                history["train_loss"].append(running / running_n)
                history["val_loss"].append(val_loss)
                history["elapsed_s"].append(time.perf_counter() - start)
                running, running_n = 0.0, 0
                if record.observe(step, val_loss):  # as good as the best: keep the later state
                    kept_state = {k: v.detach().clone() for k, v in ema.shadow.state_dict().items()}
                if trained.observe(step, val_loss) and untrained is not None:  # only then is it returned
                    trained_state = {k: v.detach().clone() for k, v in ema.shadow.state_dict().items()}
                progress.update("train", step, total_steps, epoch=epoch + 1, train_loss=history["train_loss"][-1],
                                val_loss=val_loss)
                if step - record.best_step >= patience_steps(cfg, every, record.best_step):
                    stopped_early = True
                    break
            elif step % report_every == 0:
                progress.update("train", step, total_steps, epoch=epoch + 1, train_loss=running / max(running_n, 1))
        if stopped_early:
            break
    history.update(best_val_loss=record.lowest_val, best_step=record.best_step, kept_step=record.kept_step,
                   kept_val_loss=record.kept_val, trained_step=trained.kept_step,
                   trained_val_loss=trained.kept_val, steps=step, stop_step=step, planned_steps=total_steps,
                   eval_every_steps=every, patience_steps=patience_steps(cfg, every, record.best_step),
                   epochs_run=epoch + 1, planned_epochs=epochs, stopped_early=stopped_early, world_size=world,
                   batch_size=batch, fit_time_s=time.perf_counter() - start)
    returned = trained_state if untrained is not None else kept_state
    return {k: v.cpu() for k, v in returned.items()}, history
