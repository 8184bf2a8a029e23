"""NIfTI loading, validation and atomic saving."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from normcore._utils.errors import InputError
from normcore.imaging import io as imio
from normcore.imaging.grid import CPU_GRID, template_on_grid
from normcore.imaging.io import load_mask, load_volume, save_nifti


@pytest.fixture(scope="module")
def scan() -> nib.Nifti1Image:
    volume, _ = template_on_grid(CPU_GRID)
    return nib.Nifti1Image((volume * 1000).astype(np.float32), CPU_GRID.affine)


def write(img: nib.Nifti1Image, path: Path) -> Path:
    nib.save(img, str(path))
    return path


def refused(source, match: str, name: str | None = None, **kw) -> str:
    with pytest.raises(InputError) as info:
        load_volume(source, name=name, **kw)
    msg = str(info.value)
    assert match in msg, msg
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_accepts_paths_and_bytes(scan, tmp_path, suffix):
    path = write(scan, tmp_path / f"t1{suffix}")
    for source in (path, str(path), path.read_bytes()):
        img = load_volume(source)
        assert img.shape == scan.shape and img.get_data_dtype() == np.float32
        np.testing.assert_allclose(img.affine, scan.affine)
        np.testing.assert_allclose(img.header.get_zooms(), (4.0, 4.0, 4.0))
        np.testing.assert_allclose(np.asarray(img.dataobj), np.asarray(scan.dataobj), rtol=1e-6)


def test_scaled_uint8_and_orientation_kept(tmp_path):
    data = np.zeros((20, 24, 18), np.uint8)
    data[5:15, 6:18, 4:14] = 100
    affine = np.array([[0, 0, 2.0, -20], [-2.0, 0, 0, 30], [0, 2.0, 0, -10], [0, 0, 0, 1]])  # PSR, like IXI
    img = nib.Nifti1Image(data, affine)
    img.header.set_slope_inter(2.5, 0.0)
    out = load_volume(write(img, tmp_path / "psr.nii.gz"))
    assert nib.aff2axcodes(out.affine) == ("P", "S", "R")
    assert out.get_data_dtype() == np.float32 and float(np.asarray(out.dataobj).max()) == pytest.approx(250.0)


def test_4d_singleton_is_squeezed(scan, tmp_path):
    img4 = nib.Nifti1Image(np.asarray(scan.dataobj)[..., None], scan.affine)
    out = load_volume(write(img4, tmp_path / "single.nii.gz"))
    assert out.shape == scan.shape and out.ndim == 3


def test_refuses_4d_with_two_volumes(scan, tmp_path):
    data = np.stack([np.asarray(scan.dataobj)] * 2, axis=-1)
    path = write(nib.Nifti1Image(data, scan.affine), tmp_path / "bold.nii.gz")
    msg = refused(path, "2 volumes")
    assert "bold.nii.gz" in msg and "4D" in msg


def test_refuses_2d(tmp_path):
    path = write(nib.Nifti1Image(np.random.default_rng(0).random((32, 32)).astype(np.float32), np.eye(4)),
                 tmp_path / "slice.nii")
    assert "slice.nii" in refused(path, "2D")
    flat = write(nib.Nifti1Image(np.random.default_rng(0).random((32, 32, 1)).astype(np.float32), np.eye(4)),
                 tmp_path / "flat.nii")
    refused(flat, "2D")


def test_refuses_tiny(tmp_path):
    path = write(nib.Nifti1Image(np.random.default_rng(0).random((5, 32, 32)).astype(np.float32), np.eye(4)),
                 tmp_path / "tiny.nii")
    refused(path, "too small")


def test_refuses_nans(scan, tmp_path):
    data = np.asarray(scan.dataobj).copy()
    data[0, 0, :3] = np.nan
    data[1, 1, 1] = np.inf
    msg = refused(write(nib.Nifti1Image(data, scan.affine), tmp_path / "nan.nii.gz"), "non-finite")
    assert "4 non-finite" in msg and "nan.nii.gz" in msg


def test_refuses_corrupt_gzip(scan, tmp_path):
    raw = bytearray(write(scan, tmp_path / "ok.nii.gz").read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 64] = b"\x00" * 64
    msg = refused(bytes(raw), "corrupt gzip", name="broken.nii.gz")
    assert "broken.nii.gz" in msg
    truncated = write(scan, tmp_path / "cut.nii.gz").read_bytes()[:500]
    refused(truncated, "corrupt gzip", name="cut.nii.gz")


def test_refuses_text_renamed(tmp_path):
    path = tmp_path / "notes.nii.gz"
    path.write_text("subject_id,age\n" + "sub-01,34\n" * 80)
    assert "notes.nii.gz" in refused(path, "not a readable NIfTI")
    path.write_text("hello")
    refused(path, "not a NIfTI")
    gz = tmp_path / "text.nii.gz"
    gz.write_bytes(gzip.compress(b"just some text " * 100))
    refused(gz, "not a readable NIfTI")


def test_refuses_other_extension_and_missing(scan, tmp_path):
    other = tmp_path / "scan.mgz"
    other.write_bytes(b"x" * 400)
    refused(other, "not a NIfTI file")
    refused(tmp_path / "missing.nii.gz", "not found")


def test_refuses_too_large(scan, tmp_path):
    path = write(scan, tmp_path / "big.nii")
    msg = refused(path, "too large", max_bytes=1000)
    assert "big.nii" in msg
    refused(path.read_bytes(), "too large", name="big.nii", max_bytes=1000)


def test_refuses_gzip_bomb(tmp_path):
    data = np.zeros((40, 48, 40), np.float32)
    data[20, 20, 20] = 1.0
    raw = write(nib.Nifti1Image(data, CPU_GRID.affine), tmp_path / "bomb.nii.gz").read_bytes()
    assert len(raw) < 20_000
    refused(raw, "too large by its header", name="bomb.nii.gz", max_bytes=20_000)


def test_a_gzip_stream_longer_than_its_header_claims_is_not_inflated(scan):
    """A 0.1 MB file holding a small image followed by 400 MB of zeros: refused after reading what the header
    claims plus 1 MB, never the 400 MB (peak memory bounded by the header's claim)."""
    import gzip
    import tracemalloc

    body = scan.to_bytes()
    stream = gzip.compress(body + bytes(400 * 1024**2), compresslevel=9)
    assert len(stream) < 1024**2
    tracemalloc.start()
    refused(stream, "larger than its header says", name="padded.nii.gz")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 * (len(body) + 1024**2) + 50 * 1024**2, peak


def test_a_small_gzip_claiming_a_huge_image_is_refused_from_its_header():
    import gzip

    header = nib.Nifti1Header()
    header.set_data_shape((2048, 2048, 2048))
    header.set_data_dtype(np.float32)
    stream = gzip.compress(header.binaryblock + bytes(4) + bytes(1024))
    refused(stream, "too large by its header", name="claims.nii.gz")


def test_refuses_header_claiming_a_huge_shape(scan):
    header = nib.Nifti1Header()
    header.set_data_shape((2000, 2000, 2000))
    header.set_data_dtype(np.float32)
    raw = header.binaryblock + b"\x00" * 4 + b"\x00" * 1000
    refused(raw, "image too large", name="huge.nii")


def test_refuses_analyze_header(scan):
    raw = nib.AnalyzeHeader().binaryblock + b"\x00" * 2000
    refused(raw, "no single-file NIfTI magic", name="old.nii")


@pytest.mark.parametrize("zooms", [(0.0, 2.0, 2.0), (20.0, 20.0, 20.0), (0.1, 1.0, 1.0)])
def test_refuses_bad_voxel_sizes(scan, tmp_path, zooms):
    header = nib.Nifti1Header()
    header["pixdim"][1:4] = zooms  # written by hand: nibabel refuses to build a zero-size affine itself
    header["sform_code"] = 1
    for row, name in enumerate(("srow_x", "srow_y", "srow_z")):
        header[name] = np.diag([*zooms, 1.0])[row]
    path = write(nib.Nifti1Image(np.asarray(scan.dataobj), None, header), tmp_path / "vox.nii.gz")
    msg = refused(path, "voxel size")
    assert "0.2-10 mm" in msg


def test_refuses_singular_affine(scan, tmp_path):
    affine = np.array([[2.0, 2.0, 0, 0], [0, 0, 0, 0], [0, 0, 2.0, 0], [0, 0, 0, 1]])  # two axes along x
    img = nib.Nifti1Image(np.asarray(scan.dataobj), affine)
    refused(write(img, tmp_path / "sing.nii"), "non-invertible affine")


def test_refuses_constant(scan, tmp_path):
    img = nib.Nifti1Image(np.full(scan.shape, 7, np.float32), scan.affine)
    msg = refused(write(img, tmp_path / "blank.nii.gz"), "constant")
    assert "7" in msg


def test_mask_same_grid_and_labels(scan, tmp_path):
    _, brain = template_on_grid(CPU_GRID)
    labels = (brain * np.random.default_rng(1).integers(1, 6, brain.shape)).astype(np.int16)
    path = write(nib.Nifti1Image(labels, CPU_GRID.affine), tmp_path / "labels.nii.gz")
    mask = load_mask(path, scan)
    assert mask.dtype == bool and np.array_equal(mask, brain)
    assert np.array_equal(load_mask(path.read_bytes(), scan, name="labels.nii.gz"), brain)


def test_mask_on_other_grid_is_resampled(scan, tmp_path):
    _, brain = template_on_grid(CPU_GRID)
    fine = np.repeat(np.repeat(np.repeat(brain, 2, 0), 2, 1), 2, 2).astype(np.uint8)  # 2 mm, same world box
    affine = CPU_GRID.affine.copy()
    affine[:3, :3] = np.diag([2.0] * 3)
    affine[:3, 3] -= 1.0
    mask = load_mask(write(nib.Nifti1Image(fine, affine), tmp_path / "fine.nii.gz"), scan)
    assert mask.shape == scan.shape
    assert (mask != brain).mean() < 0.01


def test_refuses_empty_and_disjoint_masks(scan, tmp_path):
    empty = write(nib.Nifti1Image(np.zeros(scan.shape, np.uint8), scan.affine), tmp_path / "empty.nii.gz")
    with pytest.raises(InputError, match="empty.nii.gz: empty mask"):
        load_mask(empty, scan)
    far = scan.affine.copy()
    far[:3, 3] += 1000.0
    ones = np.ones(scan.shape, np.uint8)
    disjoint = write(nib.Nifti1Image(ones, far), tmp_path / "far.nii.gz")
    with pytest.raises(InputError, match="does not overlap"):
        load_mask(disjoint, scan)


def test_save_is_atomic_round_trip(scan, tmp_path):
    target = tmp_path / "out" / "nested" / "restored.nii.gz"
    assert save_nifti(scan, target) == target
    back = load_volume(target)
    np.testing.assert_allclose(np.asarray(back.dataobj), np.asarray(scan.dataobj))
    np.testing.assert_allclose(back.affine, scan.affine)
    save_nifti(nib.Nifti1Image(np.asarray(scan.dataobj) * 2, scan.affine), target)  # overwrite
    assert float(np.asarray(load_volume(target).dataobj).max()) == pytest.approx(2 * float(scan.get_fdata().max()))
    assert sorted(p.name for p in target.parent.iterdir()) == ["restored.nii.gz"]
    assert target.stat().st_mode & 0o777 == 0o644
    plain = save_nifti(scan, tmp_path / "plain.nii")
    assert not plain.read_bytes().startswith(b"\x1f\x8b")


def test_save_failure_leaves_old_file(scan, tmp_path, monkeypatch):
    target = save_nifti(scan, tmp_path / "keep.nii.gz")
    before = target.read_bytes()

    def broken_save(img, path):
        Path(path).write_bytes(b"half written")
        raise OSError("disk full")

    monkeypatch.setattr(imio.nib, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_nifti(scan, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.nii.gz"]
    with pytest.raises(InputError, match="must end in"):
        save_nifti(scan, tmp_path / "x.img")
