"""Training under torchrun: two CPU processes with the gloo backend."""

import json
import os
import shutil
import subprocess
import sys

from tests.cli.test_tabular import TINY_FIT
from tests.conftest import ROOT


def test_fit_under_torchrun_with_two_gloo_processes(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "normcore", "synth", "--n", "200", "--d", "3", "--out",
                    str(tmp_path / "d.csv")], check=True, env=env, cwd=ROOT, capture_output=True)
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "normcore", "fit",
                           str(tmp_path / "d.csv"), "--age", "age", "--covariates", "sex", "--idps-regex", "^idp_",
                           *TINY_FIT, "--threads", "1", "--out", str(tmp_path / "m")],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    card = json.loads((tmp_path / "m" / "model.json").read_text())
    assert card["training"]["world_size"] == 2
    # each rank trains on half the data per epoch: with batch 256 > 90 rows per rank, one step per epoch
    assert card["training"]["steps"] == 2
    assert "2 process(es)" in proc.stdout
