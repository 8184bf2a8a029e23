"""How a network's output becomes the noise prediction: plain, or a residual on an exact Gaussian denoiser."""

from __future__ import annotations

import torch
from torch import nn

from normcore.diffusion.schedule import NoiseSchedule

PARAMETERISATIONS = ("gaussian-residual", "eps")


class CovariateTrend(nn.Module):
    """Centred covariate features of a denoiser's condition for a prior mean that moves with age and sex.

    From a condition row it takes the standardised age (column ``age``) and the sex code (column ``sex``) and
    returns (age, age^2, sex) minus their training means (:meth:`fit`), so the features are 0 on average over the
    training rows. ``given`` is the column of the flag saying whether the covariates are given (a diffusion
    autoencoder's covariate dropout): rows whose flag is 0 get all-zero features, i.e. the unconditional mean.
    """

    n_features = 3

    def __init__(self, age: int = 0, sex: int = 1, given: int | None = None):
        super().__init__()
        self.age, self.sex, self.given = int(age), int(sex), None if given is None else int(given)
        self.register_buffer("centre", torch.zeros(self.n_features))

    def raw(self, cond: torch.Tensor) -> torch.Tensor:
        a = cond[:, self.age]
        return torch.stack([a, a * a, cond[:, self.sex]], dim=1)

    @torch.no_grad()
    def fit(self, cond: torch.Tensor) -> CovariateTrend:
        """Centre the features on training conditions (all with their covariates given)."""
        self.centre.copy_(self.raw(cond.float()).mean(0))
        return self

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        features = self.raw(cond) - self.centre
        if self.given is not None:
            features = features * cond[:, self.given:self.given + 1]
        return features


class GaussianPriorResidual(nn.Module):
    """eps(x_t, t, c) = exact posterior-mean noise under a Gaussian prior + net(x_t, t, c).

    For data x ~ N(mu, s^2) element-wise and x_t = sqrt(abar) x + sqrt(1 - abar) eps, the exact denoiser
    is E[eps | x_t] = sqrt(1 - abar) (x_t - sqrt(abar) mu) / (abar s^2 + 1 - abar). The network learns
    only the departure from it, so a network that has learnt little falls back to the calibrated prior.

    ``prior_shape=None`` is the standard-normal prior (mu = 0, s = 1: the term is sqrt(1 - abar) x_t) with
    no state of its own: the wrapper's state is the network's under ``net.``. With a ``prior_shape`` the
    prior is per element, held in the buffers ``prior_mean`` and ``prior_var`` and set by :meth:`fit_prior`.
    With a ``trend`` (:class:`CovariateTrend`) as well, the prior mean moves with the condition's covariates:
    mu(c) = prior_mean + trend(c) @ prior_trend, a per-element linear regression on centred age, age^2 and sex
    whose residual variance is ``prior_var``, so even an untrained network carries the healthy age trend and a
    fixed noise code decoded at two ages differs by the trend's difference (the flow map of a Gaussian prior is
    mu(c) + s * code).
    Networks that return a tuple (noise, extra outputs such as a learned variance) keep the extras as they are.
    """

    def __init__(self, net: nn.Module, schedule: NoiseSchedule, prior_shape: tuple[int, ...] | None = None,
                 trend: CovariateTrend | None = None):
        super().__init__()
        self.net = net
        self.standard = prior_shape is None
        if trend is not None and self.standard:
            raise ValueError("a covariate trend needs a per-element prior (prior_shape)")
        self.register_buffer("abar", schedule.alphas_cumprod.float(), persistent=False)
        self.register_buffer("skip", (1 - schedule.alphas_cumprod).sqrt().float(), persistent=False)
        if not self.standard:
            self.register_buffer("prior_mean", torch.zeros(prior_shape))
            self.register_buffer("prior_var", torch.ones(prior_shape))
        self.trend = trend
        if trend is not None:
            self.register_buffer("prior_trend", torch.zeros(trend.n_features, *prior_shape))

    @torch.no_grad()
    def fit_prior(self, data: torch.Tensor, cond: torch.Tensor | None = None,
                  min_var: float = 1e-4) -> GaussianPriorResidual:
        """Per-element mean and variance of clean training data (N, *prior_shape); with a trend, the least-squares
        regression of every element on the trend's features of the training conditions ``cond`` (N, ...), all with
        their covariates given, and the residual variance (degrees of freedom N - 1 - features)."""
        if self.standard:
            raise ValueError("the standard-normal prior has nothing to fit")
        if self.trend is None:
            self.prior_mean.copy_(data.mean(0))
            self.prior_var.copy_(data.var(0).clamp_min(min_var))
            return self
        if cond is None or len(cond) != len(data):
            raise ValueError("a prior with a covariate trend is fitted with one condition row per training row")
        n, k = len(data), self.trend.n_features
        if n <= k + 1:
            raise ValueError(f"a prior with a covariate trend needs more than {k + 1} training rows, got {n}")
        design = torch.cat([torch.ones(n, 1, dtype=torch.float64),
                            self.trend.fit(cond).forward(cond.float()).double().cpu()], dim=1)
        y = data.reshape(n, -1).double().cpu()
        coef = torch.linalg.lstsq(design, y).solution  # (1 + k, elements)
        resid = y - design @ coef
        shape = self.prior_mean.shape
        device = self.prior_mean.device
        self.prior_mean.copy_(coef[0].view(shape).float().to(device))
        self.prior_trend.copy_(coef[1:].view(k, *shape).float().to(device))
        self.prior_var.copy_((resid.pow(2).sum(0) / (n - 1 - k)).view(shape).float().to(device).clamp_min(min_var))
        return self

    def mean_at(self, cond: torch.Tensor) -> torch.Tensor:
        """The prior mean of each condition row, (n, *prior_shape) (the constant mean broadcast without a trend)."""
        if self.standard:
            raise ValueError("the standard-normal prior has mean 0")
        if self.trend is None:
            return self.prior_mean.expand(len(cond), *self.prior_mean.shape)
        return self.prior_mean + torch.tensordot(self.trend(cond.float()), self.prior_trend, dims=1)

    def reference_eps(self, xt: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The exact denoiser of the prior alone (at the condition rows ``cond`` when the prior has a trend)."""
        shape = (-1, *([1] * (xt.dim() - 1)))
        if self.standard:
            return self.skip[t.long()].view(shape) * xt
        a = self.abar[t.long()].view(shape)
        mean = self.prior_mean if self.trend is None else self.mean_at(cond)
        return (1 - a).sqrt() * (xt - a.sqrt() * mean) / (a * self.prior_var + 1 - a)

    def forward(self, xt: torch.Tensor, t: torch.Tensor, cond: torch.Tensor):
        out = self.net(xt, t, cond)
        reference = self.reference_eps(xt, t, cond)
        if isinstance(out, tuple):
            return (reference + out[0], *out[1:])
        return reference + out


class GaussianCopulaResidual(GaussianPriorResidual):
    """eps(x_t, t, c) = exact posterior-mean noise under N(0, R) + net(x_t, t, c), for data whose elements are each
    N(0, 1) and correlated by R.

    For x ~ N(0, R) with R = U diag(lam) U^T the exact denoiser is
    E[eps | x_t] = sqrt(1 - abar) U diag(1 / (abar lam + 1 - abar)) U^T x_t, so a network that has learnt little
    falls back to the Gaussian copula: exact standard-normal marginals and the linear dependence of ``R``. The
    correlation is held in the buffers ``prior_basis`` (U) and ``prior_eigvals`` (lam), set by
    :meth:`fit_correlation`; before that R = I, the standard-normal prior (:class:`GaussianResidual`). The tabular
    model uses it around its untrained network (output zero) as a closed-form candidate that the network trained on
    the standard-normal prior must beat (``NormativeDiffusion``'s ``copula_candidate``).
    """

    PRIOR_BUFFERS = ("prior_basis", "prior_eigvals")

    def __init__(self, net: nn.Module, schedule: NoiseSchedule, d: int):
        super().__init__(net, schedule, None)
        self.register_buffer("prior_basis", torch.eye(d))
        self.register_buffer("prior_eigvals", torch.ones(d))

    @torch.no_grad()
    def fit_correlation(self, data: torch.Tensor, min_eigval: float = 1e-3) -> GaussianCopulaResidual:
        """R from clean training data (N, D): the Ledoit-Wolf shrunk covariance rescaled to a correlation (sample
        correlations of few rows over many elements are too spread out; shrinkage pulls them towards I by the
        amount their estimation noise calls for), eigenvalues floored at ``min_eigval``."""
        from sklearn.covariance import ledoit_wolf

        x = data.double().cpu().numpy()
        if len(x) < 3:
            return self
        cov = torch.from_numpy(ledoit_wolf(x)[0])
        scale = cov.diagonal().clamp_min(1e-12).rsqrt()
        corr = cov * scale[:, None] * scale[None, :]
        eigvals, basis = torch.linalg.eigh((corr + corr.T) / 2)
        device = self.prior_basis.device
        self.prior_basis.copy_(basis.float().to(device))
        self.prior_eigvals.copy_(eigvals.clamp_min(min_eigval).float().to(device))
        return self

    def prior_state(self) -> dict[str, torch.Tensor]:
        """The fitted correlation's buffers (what a model saves beside its network's weights)."""
        return {name: getattr(self, name).detach().cpu() for name in self.PRIOR_BUFFERS}

    @classmethod
    def check_prior_state(cls, state: dict[str, torch.Tensor], d: int) -> None:
        """Raise ValueError unless ``state`` holds the buffers of a correlation over ``d`` elements."""
        for name, shape in zip(cls.PRIOR_BUFFERS, ((d, d), (d,)), strict=True):
            if name not in state or tuple(state[name].shape) != shape:
                raise ValueError(f"the Gaussian-copula prior needs {name} of shape {shape}")

    @torch.no_grad()
    def load_prior_state(self, state: dict[str, torch.Tensor]) -> GaussianCopulaResidual:
        """Set the correlation from :meth:`prior_state`'s buffers."""
        self.check_prior_state(state, len(self.prior_eigvals))
        for name in self.PRIOR_BUFFERS:
            getattr(self, name).copy_(state[name].to(getattr(self, name)))
        return self

    def reference_eps(self, xt: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        shape = (-1, *([1] * (xt.dim() - 1)))
        a = self.abar[t.long()].view(shape)
        rotated = xt @ self.prior_basis
        return (1 - a).sqrt() * ((rotated / (a * self.prior_eigvals + 1 - a)) @ self.prior_basis.T)


class ZeroResidual(nn.Module):
    """What an untrained network adds to its exact Gaussian denoiser: nothing (every backbone zero-initialises its
    output layer). A model that kept its untrained state samples with this instead of running the network."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


class GaussianResidual(GaussianPriorResidual):
    """The standard-normal case used by the tabular model: IDPs are marginally N(0, 1) after preprocessing."""

    def __init__(self, net: nn.Module, schedule: NoiseSchedule):
        super().__init__(net, schedule, None)


def wrap_denoiser(net: nn.Module, schedule: NoiseSchedule, parameterisation: str,
                  prior_state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """The module that predicts noise: ``net`` itself (``"eps"``) or its Gaussian-residual wrapper, whose exact
    Gaussian denoiser is that of N(0, I) or, given a :class:`GaussianCopulaResidual`'s ``prior_state``, of N(0, R)."""
    if parameterisation == "eps":
        if prior_state is not None:
            raise ValueError("a Gaussian prior's state needs the gaussian-residual parameterisation, not eps")
        return net
    if parameterisation == "gaussian-residual":
        if prior_state is None:
            return GaussianResidual(net, schedule)
        d = len(prior_state.get("prior_eigvals", ()))
        return GaussianCopulaResidual(net, schedule, d).load_prior_state(prior_state)
    raise ValueError(f"unknown parameterisation {parameterisation!r}; choose one of {PARAMETERISATIONS}")
