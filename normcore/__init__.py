"""normcore: normative modelling of brain measures with diffusion models (no UI code here).

Packages: ``normcore.tabular`` (IDP tables: the model protocol, the diffusion model, baselines,
preprocessing, evaluation, synthetic truths), ``normcore.imaging`` (T1 MRI), ``normcore.diffusion``
(the diffusion core both use), ``normcore.nets`` (networks), ``normcore.metrics``, ``normcore.plotting``,
``normcore.registry`` (every model type by name), ``normcore.cli``.
"""

from normcore._utils.device import describe_device, resolve_device
from normcore._utils.errors import InputError
from normcore._utils.progress import Cancelled, Progress
from normcore._version import __version__
from normcore.registry import load_model, make_model
from normcore.tabular.base import NormativeModel
from normcore.tabular.diffusion_model import NormativeDiffusion
from normcore.tabular.synthetic import SyntheticTruth, make_synthetic

__all__ = ["Cancelled", "InputError", "NormativeDiffusion", "NormativeModel", "Progress", "SyntheticTruth",
           "describe_device", "load_model", "make_model", "make_synthetic", "resolve_device",
           "__version__"]
