"""Reverse-process samplers for epsilon-prediction denoisers.

A denoiser is any callable ``eps_fn(x_t, t, cond) -> eps_hat``; ``t`` is an integer tensor of shape
(n,) with one timestep per condition row. ``x_t`` has shape ``(n, dim)`` or ``(n, m, dim)``: the second
form draws ``m`` samples per condition row while the conditioning is embedded once per row, which is
how scoring shares work between the samples of one subject. Samplers work in batches on the device and
never loop over samples in Python.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from normcore.diffusion.likelihood import per_row, x0_from_eps
from normcore.diffusion.noise import NoiseSource, PseudoRandom
from normcore.diffusion.schedule import NoiseSchedule

EpsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _coefficients(schedule: NoiseSchedule, t: int, t_prev: int) -> tuple[float, float]:
    table = schedule.alphas_cumprod
    a_t = float(table[t])
    a_p = float(table[t_prev]) if t_prev >= 0 else 1.0
    return a_t, a_p


def _chain(schedule: NoiseSchedule, ts: list[int]):
    """(t, t_prev, abar_t, abar_prev) along a descending chain; the last step goes to t_prev = -1 (data)."""
    for i, t in enumerate(ts):
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        yield (t, t_prev, *_coefficients(schedule, t, t_prev))


def _predict(eps_fn: EpsFn, x: torch.Tensor, t: int, cond: torch.Tensor, a_t: float,
             clip_x0: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted noise and clean sample at step t (x0 optionally clipped to +-clip_x0)."""
    tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
    eps = eps_fn(x, tt, cond).float()
    return eps, x0_from_eps(x, eps, a_t, clip_x0)


def eps_from_x0(x: torch.Tensor, x0: torch.Tensor, a_t) -> torch.Tensor:
    """The noise consistent with x_t and a (clipped) clean-sample estimate."""
    return (x - a_t**0.5 * x0) / (1 - a_t) ** 0.5


@torch.no_grad()
def ddim_sample(eps_fn: EpsFn, schedule: NoiseSchedule, cond: torch.Tensor, shape: tuple[int, ...],
                steps: int = 50, eta: float = 0.0, generator: torch.Generator | None = None,
                clip_x0: float | None = None, noise: NoiseSource | None = None) -> torch.Tensor:
    """DDIM (Song et al. 2021) on a respaced chain; ``eta=0`` is deterministic, ``eta=1`` is DDPM-like."""
    device = cond.device
    noise = noise or PseudoRandom(generator)
    x = noise(shape, device)
    ts = schedule.respaced(steps).tolist()
    for t, t_prev, a_t, a_p in _chain(schedule, ts):
        eps, x0 = _predict(eps_fn, x, t, cond, a_t, clip_x0)
        if clip_x0 is not None:
            eps = eps_from_x0(x, x0, a_t)
        sigma = eta * max((1 - a_p) / (1 - a_t) * (1 - a_t / a_p), 0.0) ** 0.5
        x = a_p**0.5 * x0 + max(1 - a_p - sigma**2, 0.0) ** 0.5 * eps
        if sigma > 0 and t_prev >= 0:
            x = x + sigma * noise(shape, device)
    return x


@torch.no_grad()
def ddpm_sample(eps_fn: EpsFn, schedule: NoiseSchedule, cond: torch.Tensor, shape: tuple[int, ...],
                steps: int | None = None, generator: torch.Generator | None = None,
                clip_x0: float | None = None, noise: NoiseSource | None = None) -> torch.Tensor:
    """Ancestral DDPM sampling (Ho et al. 2020) with posterior variance, over all T steps or a respaced chain."""
    device = cond.device
    noise = noise or PseudoRandom(generator)
    x = noise(shape, device)
    ts = schedule.respaced(steps or schedule.timesteps).tolist()
    for t, t_prev, a_t, a_p in _chain(schedule, ts):
        _, x0 = _predict(eps_fn, x, t, cond, a_t, clip_x0)
        alpha = a_t / a_p
        var = (1 - a_p) / (1 - a_t) * (1 - alpha)
        x = (a_p**0.5 * (1 - alpha) / (1 - a_t)) * x0 + (alpha**0.5 * (1 - a_p) / (1 - a_t)) * x
        if t_prev >= 0:
            x = x + var**0.5 * noise(shape, device)
    return x


def _half_log_snr(a: float) -> float:
    return 0.5 * math.log(a / (1 - a))


def _multistep(eps_fn: EpsFn, schedule: NoiseSchedule, cond: torch.Tensor, shape: tuple[int, ...], steps: int,
               noise: NoiseSource, clip_x0: float | None, update, log_snr_start: float | None) -> torch.Tensor:
    """The loop shared by the DPM-Solver++(2M) solvers: log-SNR spacing (from ``log_snr_start`` on, see
    :meth:`NoiseSchedule.respaced_log_snr`), one network call per step, ``update(x, x0, prev_x0, h, prev_h, a_p,
    a_t)`` for the step, the data prediction as the last step."""
    x = noise(shape, cond.device)
    prev_x0, prev_h = None, None
    for t, t_prev, a_t, a_p in _chain(schedule, schedule.respaced_log_snr(steps, log_snr_start).tolist()):
        _, x0 = _predict(eps_fn, x, t, cond, a_t, clip_x0)
        if t_prev < 0:
            return x0
        h = _half_log_snr(a_p) - _half_log_snr(a_t)
        x = update(x, x0, prev_x0, h, prev_h, a_p, a_t)
        prev_x0, prev_h = x0, h
    return x


@torch.no_grad()
def dpmpp_2m_sample(eps_fn: EpsFn, schedule: NoiseSchedule, cond: torch.Tensor, shape: tuple[int, ...],
                    steps: int = 25, generator: torch.Generator | None = None,
                    clip_x0: float | None = None, noise: NoiseSource | None = None,
                    log_snr_start: float | None = None) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022): a second-order multistep ODE solver, one network call per step.

    Same probability-flow ODE as DDIM(eta=0) (which is its first-order special case) but with a
    second-order update from the last two data predictions, so short chains are far more accurate.
    Timesteps are spaced uniformly in log-SNR; the final step returns the data prediction at t=0.
    """

    def update(x, x0, prev_x0, h, prev_h, a_p, a_t):
        d = x0
        if prev_x0 is not None:
            r = prev_h / h
            d = (1 + 0.5 / r) * x0 - (0.5 / r) * prev_x0
        return ((1 - a_p) / (1 - a_t)) ** 0.5 * x - a_p**0.5 * math.expm1(-h) * d

    return _multistep(eps_fn, schedule, cond, shape, steps, noise or PseudoRandom(generator), clip_x0, update,
                      log_snr_start)


@torch.no_grad()
def dpmpp_2m_sde_sample(eps_fn: EpsFn, schedule: NoiseSchedule, cond: torch.Tensor, shape: tuple[int, ...],
                        steps: int = 25, generator: torch.Generator | None = None,
                        clip_x0: float | None = None, noise: NoiseSource | None = None, eta: float = 1.0,
                        log_snr_start: float | None = None) -> torch.Tensor:
    """SDE-DPM-Solver++(2M) (Lu et al. 2022, "midpoint" form): the stochastic second-order solver.

    Injected noise contracts the errors of an imperfect denoiser, which the deterministic ODE
    solvers integrate (they over-disperse for high-dimensional, strongly dependent IDPs), while
    the second-order update keeps short chains accurate. Log-SNR spacing; the final step returns the
    data prediction. ``eta`` in [0, 1] scales the injected noise as in k-diffusion: 1 is the reverse SDE,
    0 the probability-flow ODE (no noise drawn after the start), values between a mixture of both
    that is exact in the limit of small steps for any ``eta``.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1], got {eta}")
    noise = noise or PseudoRandom(generator)

    def update(x, x0, prev_x0, h, prev_h, a_p, a_t):
        decay = -math.expm1(-(1 + eta) * h)  # 1 - e^{-(1 + eta) h}
        x = ((1 - a_p) / (1 - a_t)) ** 0.5 * math.exp(-eta * h) * x + a_p**0.5 * decay * x0
        if prev_x0 is not None:
            x = x + 0.5 * a_p**0.5 * decay * (h / prev_h) * (x0 - prev_x0)
        if eta == 0:
            return x
        return x + (1 - a_p) ** 0.5 * (-math.expm1(-2 * eta * h)) ** 0.5 * noise(shape, cond.device)

    return _multistep(eps_fn, schedule, cond, shape, steps, noise, clip_x0, update, log_snr_start)


@torch.no_grad()
def ddim_from_levels(eps_fn: EpsFn, schedule: NoiseSchedule, xt: torch.Tensor, t_start: torch.Tensor,
                     cond: torch.Tensor, steps: int, clip_x0: float | None) -> torch.Tensor:
    """Deterministic DDIM from noisy ``xt`` at per-row start timesteps ``t_start`` down to clean data.

    The partial chain of restoration: each row descends in ``steps`` equal steps from its own level.
    """
    x = xt
    fracs = torch.linspace(1.0, 0.0, steps + 1, device=xt.device)
    for i in range(steps):
        t = (t_start.float() * fracs[i]).round().long()
        t_next = torch.minimum((t_start.float() * fracs[i + 1]).round().long() - 1, t - 1)  # -1 = clean data
        a_t, a_n = per_row(schedule.abar(t), x), per_row(schedule.abar(t_next), x)
        x0 = x0_from_eps(x, eps_fn(x, t, cond), a_t, clip_x0)
        x = a_n.sqrt() * x0 + (1 - a_n).sqrt() * eps_from_x0(x, x0, a_t)
    return x


@torch.no_grad()
def ddim_invert(eps_fn: EpsFn, schedule: NoiseSchedule, x0: torch.Tensor, cond: torch.Tensor, steps: int,
                refinements: int = 2) -> torch.Tensor:
    """Deterministic DDIM inversion (Song et al. 2021; DiffAE): clean ``x0`` to its code at t = T-1.

    Runs DDIM(eta=0) forward in time on the respaced chain of ``steps`` steps. Each step first uses the noise
    predicted at the current (lower) level, then ``refinements`` fixed-point iterations re-predict it at the level
    reached, which is the noise :func:`ddim_decode` uses for that step backwards: with them, decoding the code
    returns ``x0`` up to the fixed point's convergence rather than the first-order error of plain inversion.
    Costs ``steps * (1 + refinements)`` network calls.
    """
    ts = schedule.respaced(steps).tolist()[::-1]  # ascending: 0 ... T-1
    x, a_prev, t_prev = x0, 1.0, ts[0]
    for t in ts:
        a_t = float(schedule.alphas_cumprod[t])

        def step(eps: torch.Tensor, x=x, a_prev=a_prev, a_t=a_t) -> torch.Tensor:
            return a_t**0.5 * (x - (1 - a_prev) ** 0.5 * eps) / a_prev**0.5 + (1 - a_t) ** 0.5 * eps

        x_next = step(eps_fn(x, torch.full((x.shape[0],), t_prev, device=x.device, dtype=torch.long), cond).float())
        for _ in range(refinements):
            tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
            x_next = step(eps_fn(x_next, tt, cond).float())
        x, a_prev, t_prev = x_next, a_t, t
    return x


@torch.no_grad()
def ddim_decode(eps_fn: EpsFn, schedule: NoiseSchedule, x_t: torch.Tensor, cond: torch.Tensor,
                steps: int) -> torch.Tensor:
    """Deterministic DDIM (eta = 0, no clipping) from a given code at t = T-1 down to clean data.

    The inverse of :func:`ddim_invert` on the same respaced chain: the last step goes from the lowest level
    to the data, the first step of the inversion.
    """
    x = x_t
    for t, _, a_t, a_p in _chain(schedule, schedule.respaced(steps).tolist()):
        eps, x0 = _predict(eps_fn, x, t, cond, a_t, None)
        x = a_p**0.5 * x0 + (1 - a_p) ** 0.5 * eps
    return x


SAMPLERS = ("dpm++2m-sde", "dpm++2m", "ddim", "ddpm")


def sample(eps_fn: EpsFn, schedule: NoiseSchedule, cond: torch.Tensor, shape: tuple[int, ...],
           sampler: str = "ddim", steps: int = 50, eta: float | None = None,
           generator: torch.Generator | None = None, clip_x0: float | None = None,
           noise: NoiseSource | None = None, log_snr_start: float | None = None) -> torch.Tensor:
    """Dispatch by name: ``dpm++2m-sde``, ``dpm++2m``, ``ddim`` or ``ddpm``. ``noise`` (default: pseudo-random
    from ``generator``) supplies the sampler's noise draws, :func:`~normcore.diffusion.noise.noise_draws` of them.

    ``eta``: the stochastic share of ``ddim`` and ``dpm++2m-sde`` (``None``: their own default, 0 for DDIM and
    1, the full reverse SDE, for ``dpm++2m-sde``). ``log_snr_start``: where the log-SNR spaced solvers
    (``dpm++2m-sde``, ``dpm++2m``) begin their evenly spaced steps (:meth:`NoiseSchedule.respaced_log_snr`)."""
    if sampler == "dpm++2m-sde":
        return dpmpp_2m_sde_sample(eps_fn, schedule, cond, shape, steps, generator, clip_x0, noise,
                                   1.0 if eta is None else eta, log_snr_start)
    if sampler == "dpm++2m":
        return dpmpp_2m_sample(eps_fn, schedule, cond, shape, steps, generator, clip_x0, noise, log_snr_start)
    if sampler == "ddim":
        return ddim_sample(eps_fn, schedule, cond, shape, steps, eta or 0.0, generator, clip_x0, noise)
    if sampler == "ddpm":
        return ddpm_sample(eps_fn, schedule, cond, shape, steps, generator, clip_x0, noise)
    raise ValueError(f"unknown sampler {sampler!r}; use dpm++2m-sde, dpm++2m, ddim or ddpm")
