"""normcore: normative modelling of brain measures with diffusion models (no UI code here)."""

__version__ = "0.1.0"

from normcore.tabular.diffusion_model import NormativeDiffusion  # noqa: E402
from normcore.tabular.synthetic import SyntheticTruth, make_synthetic  # noqa: E402

__all__ = ["NormativeDiffusion", "SyntheticTruth", "make_synthetic", "__version__"]
