"""normcore: normative modelling of brain measures with diffusion models (no UI code here).

Packages: ``normcore.tabular`` (IDP tables: the model protocol, the diffusion model, baselines,
preprocessing, evaluation, synthetic truths), ``normcore.imaging`` (T1 MRI), ``normcore.diffusion``
(the diffusion core both use), ``normcore.nets`` (networks), ``normcore.metrics``, ``normcore.plotting``,
``normcore.registry`` (every model type by name), ``normcore.cli``.
"""

import os

# OpenMP threads sleep instead of spinning while they wait: on a busy machine spinning threads take the cores
# from the ones doing the work (normcore/_utils/threads.py). Set before torch is imported; a user's choice wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from normcore._utils.device import describe_device, resolve_device  # noqa: E402
from normcore._utils.errors import InputError  # noqa: E402
from normcore._utils.progress import Cancelled, Progress  # noqa: E402
from normcore._version import __version__  # noqa: E402
from normcore.registry import load_model, make_model  # noqa: E402
from normcore.tabular.base import NormativeModel  # noqa: E402
from normcore.tabular.diffusion_model import NormativeDiffusion  # noqa: E402
from normcore.tabular.synthetic import SyntheticTruth, make_synthetic  # noqa: E402

__all__ = ["Cancelled", "InputError", "NormativeDiffusion", "NormativeModel", "Progress", "SyntheticTruth",
           "describe_device", "load_model", "make_model", "make_synthetic", "resolve_device",
           "__version__"]
