import json
import zipfile

import pytest
import torch

from normcore._utils.errors import InputError
from normcore.persistence import load_model_dir, model_dir_to_zip, save_model_dir, zip_to_model_dir


def test_save_replaces_atomically_and_loads(tmp_path):
    save_model_dir(tmp_path / "m", {"w": torch.ones(2)}, {"format": "f", "v": 1})
    save_model_dir(tmp_path / "m", {"w": torch.zeros(2)}, {"format": "f", "v": 2})
    tensors, card = load_model_dir(tmp_path / "m", "f")
    assert card["v"] == 2 and torch.equal(tensors["w"], torch.zeros(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temp or backup folders left


def test_load_refuses_wrong_format_and_corrupt_weights(tmp_path):
    save_model_dir(tmp_path / "m", {"w": torch.ones(2)}, {"format": "other"})
    with pytest.raises(InputError, match="format"):
        load_model_dir(tmp_path / "m", "f")
    (tmp_path / "m" / "model.json").write_text(json.dumps({"format": "f"}))
    (tmp_path / "m" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(InputError, match="unreadable weights"):
        load_model_dir(tmp_path / "m", "f")


def test_zip_round_trip_and_refusals(tmp_path):
    save_model_dir(tmp_path / "m", {"w": torch.arange(3.0)}, {"format": "f"})
    data = model_dir_to_zip(tmp_path / "m")
    zip_to_model_dir(data, tmp_path / "copy")
    assert torch.equal(load_model_dir(tmp_path / "copy", "f")[0]["w"], torch.arange(3.0))
    with pytest.raises(InputError, match="not a zip"):
        zip_to_model_dir(b"hello", tmp_path / "x")
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("model.json", "{}")
        zf.writestr("model.pkl", "x")
    with pytest.raises(InputError, match="exactly"):
        zip_to_model_dir(evil.read_bytes(), tmp_path / "y")
