"""Normative models of IDP tables: one model protocol, the diffusion model, baselines, and their tools.

:class:`NormativeModel` is the protocol every tabular model follows (``base``); the conditional diffusion
model (``diffusion_model``) and the classic baselines (``baselines``) implement it. Beside them: reading
and validating tables (``io``, ``validation``), the closed-form preprocessing (``covariates``,
``location_scale``, ``gaussianisation``), scores from samples (``scoring``), the training loop (``training``),
the evaluation suite (``evaluation``) and synthetic cohorts with exact truths (``synthetic``).
"""

from normcore.tabular.base import DEFAULT_QUANTILES, NormativeModel, NotFittedError
from normcore.tabular.baselines import LocationScaleSHASH, PCNToolkitBLR
from normcore.tabular.diffusion_model import NormativeDiffusion
from normcore.tabular.evaluation import evaluate
from normcore.tabular.io import read_table, write_table_atomic
from normcore.tabular.synthetic import SyntheticTruth, make_synthetic
from normcore.tabular.validation import ValidationReport, resolve_idps, validate_table

__all__ = ["DEFAULT_QUANTILES", "LocationScaleSHASH", "NormativeDiffusion", "NormativeModel", "NotFittedError",
           "PCNToolkitBLR", "SyntheticTruth", "ValidationReport", "evaluate", "make_synthetic", "read_table",
           "resolve_idps", "validate_table", "write_table_atomic"]
