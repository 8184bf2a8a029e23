"""Sources of the standard-normal noise a reverse sampler draws: pseudo-random or randomised quasi-Monte Carlo.

A sampler draws noise once at its start and, if stochastic, once per step (:func:`noise_draws` counts them). A
:class:`NoiseSource` hands out those draws in order. :class:`PseudoRandom` is ``torch.randn`` with a generator.
:class:`ScrambledSobol` is for estimates over many samples of one condition (centiles, z-scores, quantiles). Each
coordinate of the samples (an IDP) gets one randomised Sobol set whose dimensions are that coordinate's draws, and the
coordinates' sets are paired in random orders (Owen's Latin supercube sampling). Each sample is still exactly a
sample of the model. Each condition's m samples together cover the noise space more evenly than independent draws,
so functionals of their distribution (the empirical CDF at a value, a quantile) carry less Monte-Carlo error at the
same m (BENCHMARKS.md).
"""

from __future__ import annotations

import math
from typing import Protocol

import torch

SAMPLING_NOISE = ("sobol", "pseudo-random")
"""Names of the noise a model's estimates may use: :class:`ScrambledSobol` or :class:`PseudoRandom`."""
SOBOL_BITS = 30
"""Bits of torch's Sobol sequence; points are integers on a 2^30 grid."""
SOBOL_MAX_DIM = 21201
"""Largest dimension torch's :class:`~torch.quasirandom.SobolEngine` supports."""


class NoiseSource(Protocol):
    def __call__(self, shape: tuple[int, ...], device: torch.device | str) -> torch.Tensor:
        """The next draw of independent-looking standard normals of ``shape`` (float32)."""


class PseudoRandom:
    """``torch.randn`` from ``generator``: independent draws, the samplers' default."""

    def __init__(self, generator: torch.Generator | None = None):
        self.generator = generator

    def __call__(self, shape: tuple[int, ...], device: torch.device | str) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator, device=device)


class ScrambledSobol:
    """Randomised quasi-Monte Carlo normals: per coordinate, the first ``per_group`` points of a scrambled Sobol set.

    A sampler run draws ``draws`` times, each draw ``dim`` numbers (coordinates) per sample. Coordinate j of sample
    i takes, over the draws, the ``draws`` coordinates of point i of coordinate j's own Sobol sequence, mapped to
    normals by the inverse normal CDF. Each coordinate's sequence is scrambled independently (torch's random linear
    matrix scramble; independent blocks whose point order is permuted above :data:`SOBOL_MAX_DIM` draws), and every
    coordinate but the first meets the others in a random point order (Latin supercube sampling). So the draws of
    one coordinate, the ones its own value depends on most, use a Sobol sequence's first and best-spread dimensions
    whatever ``dim`` is; one sequence over all ``draws * dim`` numbers spreads less well at hundreds of coordinates
    (BENCHMARKS.md). :meth:`noise` gives a sampler run for ``groups`` conditions a :class:`NoiseSource` that shifts
    the points digitally per group (a random XOR per coordinate and draw), so each group's samples are a randomised
    set of their own: every sample is marginally exactly standard normal (up to float32: |z| is bounded at about
    5.4, a probability of 6e-8), every coordinate's ``per_group`` values are stratified at every draw (one in each
    1/2^k interval when ``per_group`` = 2^k, in any case far more evenly than independent draws; then a
    coordinate's first two draws are also a (0, k, 2)-net: one point in every dyadic box of area 2^-k), and
    estimates averaged over a group are unbiased. One scrambled set may serve many runs, each with new shifts.

    ``generator`` seeds the scrambles, the permutations and the shifts, so a seed reproduces the draws.
    """

    def __init__(self, per_group: int, dim: int, draws: int, generator: torch.Generator | None = None):
        if min(per_group, dim, draws) < 1:
            raise ValueError("per_group, dim and draws must be at least 1")
        self.per_group, self.dim, self.draws = per_group, dim, draws
        where = generator.device if generator is not None else torch.device("cpu")  # a CUDA generator draws there
        sets = []
        for j in range(dim):
            points = _scrambled_points(per_group, draws, generator, where)
            if j:  # paired with the other coordinates' points in a random order
                points = points[torch.randperm(per_group, generator=generator, device=where).cpu()]
            sets.append(points)
        # (per_group, draws * dim) integers on the 2^30 grid; draw t's coordinates are columns t*dim .. (t+1)*dim
        self.points = torch.stack(sets, dim=2).reshape(per_group, draws * dim).to(where)

    def noise(self, groups: int, generator: torch.Generator | None = None) -> NoiseSource:
        """The draws of one sampler run for ``groups`` conditions of ``per_group`` samples, group-major: each draw
        has ``groups * per_group * dim`` numbers in any shape of that size (``(groups, per_group, dim)`` or
        ``(groups * per_group, 1, dim)``). Asking for more than ``draws`` draws is an error (the sampler and
        :func:`noise_draws` disagree)."""
        shift = torch.randint(0, 2**SOBOL_BITS, (groups, 1, self.points.shape[1]), generator=generator,
                              dtype=torch.int32, device=self.points.device)
        taken = 0

        def draw(shape: tuple[int, ...], device: torch.device | str) -> torch.Tensor:
            nonlocal taken
            size = groups * self.per_group * self.dim
            if torch.Size(shape).numel() != size:
                raise ValueError(f"ScrambledSobol draws {size} numbers ({groups} x {self.per_group} x {self.dim}), "
                                 f"not shape {tuple(shape)}")
            if taken >= self.draws:
                raise RuntimeError(f"ScrambledSobol was planned for {self.draws} draws; a sampler asked for more")
            cols = slice(taken * self.dim, (taken + 1) * self.dim)
            taken += 1
            grid = torch.bitwise_xor(self.points[None, :, cols], shift[:, :, cols])  # (groups, per_group, dim)
            # 2u - 1 at the cell centre, u = (grid + 1/2) / 2^30; float32 and erfinv (ndtri is several times slower)
            x = (grid * 2 + (1 - 2**SOBOL_BITS)).float().mul_(2.0**-SOBOL_BITS).clamp_(-1 + 2**-24, 1 - 2**-24)
            return torch.erfinv(x).mul_(math.sqrt(2)).reshape(shape).to(device)

        return draw


def _scrambled_points(n: int, width: int, generator: torch.Generator | None, where: torch.device) -> torch.Tensor:
    """The first ``n`` points of a scrambled Sobol sequence of ``width`` dimensions as int32 on the 2^30 grid, (n,
    width); above :data:`SOBOL_MAX_DIM` dimensions, independent blocks whose point order is permuted."""
    blocks = []
    for start in range(0, width, SOBOL_MAX_DIM):
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=where))
        engine = torch.quasirandom.SobolEngine(min(SOBOL_MAX_DIM, width - start), scramble=True, seed=seed)
        points = (engine.draw(n, dtype=torch.float64) * 2**SOBOL_BITS).round().to(torch.int32)
        if start:
            points = points[torch.randperm(n, generator=generator, device=where).cpu()]
        blocks.append(points)
    return torch.cat(blocks, dim=1)


def noise_draws(sampler: str, steps: int, eta: float | None = None) -> int:
    """How many noise draws the named sampler makes over ``steps`` steps (see :mod:`.samplers`; ``eta`` as in
    :func:`~normcore.diffusion.samplers.sample`).

    The deterministic solvers (``dpm++2m``, ``ddim`` with ``eta = 0``, ``dpm++2m-sde`` with ``eta = 0``) draw only
    their starting noise; the stochastic ones (``dpm++2m-sde``, ``ddpm``, ``ddim`` with ``eta > 0``) draw it and
    then once per step but the last.
    """
    stochastic = (sampler == "ddpm" or (sampler == "dpm++2m-sde" and (eta is None or eta > 0))
                  or (sampler == "ddim" and eta is not None and eta > 0))
    return max(1, steps) if stochastic else 1
