import json
import os
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


def test_swap_interrupted_between_the_renames_leaves_a_loadable_model(tmp_path, monkeypatch):
    """Bug: the old folder was deleted or moved before the new one was in place; a crash lost the model."""
    import normcore._utils.atomic as atomic

    save_model_dir(tmp_path / "m", {"w": torch.ones(2)}, {"format": "f", "v": 1})
    real_replace, calls = atomic.os.replace, []

    def crash_on_second(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the old folder is aside, the new one not yet in place
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        save_model_dir(tmp_path / "m", {"w": torch.zeros(2)}, {"format": "f", "v": 2})
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    assert not (tmp_path / "m").exists()  # the moment of the crash: nothing at the path ...
    tensors, card = load_model_dir(tmp_path / "m", "f")  # ... and loading puts the old model back
    assert card["v"] == 1 and torch.equal(tensors["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_a_bad_upload_never_removes_the_model_it_would_replace(tmp_path):
    """Bug: zip_to_model_dir deleted the existing folder before moving the new one in."""
    save_model_dir(tmp_path / "m", {"w": torch.ones(2)}, {"format": "f"})
    archive = tmp_path / "m.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("model.json", (tmp_path / "m" / "model.json").read_text())
        zf.writestr("model.safetensors", (tmp_path / "m" / "model.safetensors").read_bytes())
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("model.safetensors")
    data[info.header_offset + 30 + len(info.filename) + 5] ^= 0xFF  # a stored byte: the CRC no longer matches
    save_model_dir(tmp_path / "target", {"w": torch.full((2,), 7.0)}, {"format": "f"})
    with pytest.raises(InputError, match="damaged"):
        zip_to_model_dir(bytes(data), tmp_path / "target")
    assert torch.equal(load_model_dir(tmp_path / "target", "f")[0]["w"], torch.full((2,), 7.0))


def test_card_versions_migrate_in_order_and_newer_cards_are_refused(tmp_path):
    save_model_dir(tmp_path / "m", {"w": torch.ones(1)}, {"format": "f", "steps": []})  # no version: 1
    migrations = {1: lambda card, t: card["steps"].append("1->2"), 2: lambda card, t: card["steps"].append("2->3")}
    _, card = load_model_dir(tmp_path / "m", "f", version=3, migrations=migrations)
    assert card["steps"] == ["1->2", "2->3"] and card["format_version"] == 3
    save_model_dir(tmp_path / "new", {"w": torch.ones(1)}, {"format": "f", "format_version": 4})
    with pytest.raises(InputError, match="newer normcore"):
        load_model_dir(tmp_path / "new", "f", version=3, migrations=migrations)


def test_saved_files_are_readable_by_colleagues(tmp_path):
    save_model_dir(tmp_path / "m", {"w": torch.ones(1)}, {"format": "f"})
    assert (tmp_path / "m").stat().st_mode & 0o777 == 0o755
    assert {(p.stat().st_mode & 0o777) for p in (tmp_path / "m").iterdir()} == {0o644}


def test_a_process_killed_between_the_renames_leaves_a_loadable_model(tmp_path):
    """The same as a real crash: a child process saving over a model is SIGKILLed between the two renames."""
    import subprocess
    import sys
    import textwrap

    from tests.conftest import ROOT

    save_model_dir(tmp_path / "m", {"w": torch.ones(2)}, {"format": "f", "v": 1})
    child = textwrap.dedent(f"""
        import os, signal, torch
        import normcore._utils.atomic as atomic
        from normcore.persistence import save_model_dir
        real, calls = atomic.os.replace, []
        def replace(src, dst):
            calls.append(dst)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            real(src, dst)
        atomic.os.replace = replace
        save_model_dir({str(tmp_path / "m")!r}, {{"w": torch.zeros(2)}}, {{"format": "f", "v": 2}})
    """)
    proc = subprocess.run([sys.executable, "-c", child], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True)
    assert proc.returncode == -9  # killed, as intended
    assert not (tmp_path / "m").exists()
    tensors, card = load_model_dir(tmp_path / "m", "f")
    assert card["v"] == 1 and torch.equal(tensors["w"], torch.ones(2))
