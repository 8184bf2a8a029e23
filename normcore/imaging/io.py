"""Loading, validating and saving NIfTI volumes (paths or uploaded bytes) with nibabel.

Every refusal is an :class:`~normcore._utils.errors.InputError` whose one-line message names the file and the problem.
Parsing happens in memory (``Nifti1Image.from_bytes``): nothing is executed and no temporary file is written.
"""

from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.imageglobals import LoggingOutputSuppressor
from nibabel.processing import resample_from_to

from normcore._utils.atomic import write_atomic
from normcore._utils.errors import InputError

MAX_BYTES = 512 * 1024**2
MIN_VOXELS = 8
VOXEL_MM = (0.2, 10.0)
GZIP_MAGIC = b"\x1f\x8b"
# Decompressed data may be larger than the compressed file, but not unboundedly (a gzip bomb).
INFLATE_FACTOR = 8
# The float32 voxel array may be at most this many times max_bytes (guards headers claiming huge shapes).
FLOAT_FACTOR = 4


def _name_of(source: str | Path | bytes, name: str | None) -> str:
    if name:
        return name
    return Path(source).name if isinstance(source, str | Path) else "uploaded file"


def _check_size(size: int, name: str, max_bytes: int) -> None:
    if size > max_bytes:
        mb = 1024**2
        raise InputError(f"{name}: file too large ({size / mb:.1f} MB; the limit is {max_bytes / mb:.1f} MB)")


def _read_source(source: str | Path | bytes, name: str, max_bytes: int) -> bytes:
    """The file's raw (possibly gzipped) bytes, after the size check."""
    if isinstance(source, bytes | bytearray | memoryview):
        raw = bytes(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise InputError(f"{name}: file not found ({path})")
        lower = path.name.lower()
        if not (lower.endswith(".nii") or lower.endswith(".nii.gz")):
            raise InputError(f"{name}: not a NIfTI file (a .nii or .nii.gz file is expected)")
        _check_size(path.stat().st_size, name, max_bytes)
        raw = path.read_bytes()
    _check_size(len(raw), name, max_bytes)
    if not raw:
        raise InputError(f"{name}: the file is empty")
    return raw


def _claimed_bytes(header: bytes, name: str, max_bytes: int) -> int | None:
    """The bytes a NIfTI file needs by its own header (offset + voxels x bytes per voxel), refusing before
    any voxel is read a header whose float32 array would exceed ``FLOAT_FACTOR * max_bytes``; None when the
    header is not NIfTI (the parser then names the problem)."""
    if len(header) < 348:
        return None
    for order in ("<", ">"):
        size = int(np.frombuffer(header[:4], f"{order}i4")[0])
        if size == 348 and header[344:348] in (b"n+1\x00", b"ni1\x00"):
            dims = np.frombuffer(header[40:56], f"{order}i2").astype(np.int64)
            bitpix = int(np.frombuffer(header[72:74], f"{order}i2")[0])
            offset = float(np.frombuffer(header[108:112], f"{order}f4")[0])
            break
        if size == 540 and len(header) >= 540 and header[4:8] == b"n+2\x00":
            dims = np.frombuffer(header[16:80], f"{order}i8").astype(np.int64)
            bitpix = int(np.frombuffer(header[14:16], f"{order}i2")[0])
            offset = float(np.frombuffer(header[168:176], f"{order}i8")[0])
            break
    else:
        return None
    ndim = int(dims[0])
    if not 1 <= ndim <= 7 or (dims[1:ndim + 1] < 1).any():
        raise InputError(f"{name}: not a readable NIfTI image (invalid dimensions {dims[:ndim + 1].tolist()})")
    voxels = int(np.prod(dims[1:ndim + 1].astype(np.float64)))
    if 4 * voxels > FLOAT_FACTOR * max_bytes:
        shape = tuple(int(d) for d in dims[1:ndim + 1])
        raise InputError(f"{name}: image too large by its header (shape {shape}, {voxels} voxels; the limit is "
                         f"{FLOAT_FACTOR * max_bytes // 4} voxels)")
    return int(max(offset, 352)) + voxels * max(bitpix, 8) // 8


def _inflate(raw: bytes, name: str, max_bytes: int) -> bytes:
    """Decompress gzip data (detected by its magic bytes), refusing corrupt or oversized streams.

    The header is inflated first and the rest only up to the size it claims (plus extensions), so a small
    file claiming or holding a huge image is refused without inflating it."""
    if not raw.startswith(GZIP_MAGIC):
        _claimed_bytes(raw[:540], name, max_bytes)
        return raw
    limit = INFLATE_FACTOR * max_bytes
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as fh:
            head = fh.read(540)
            claimed = _claimed_bytes(head, name, max_bytes)
            if claimed is not None:
                limit = min(limit, claimed + 1024**2)  # room for header extensions
            data = head + fh.read(max(0, limit + 1 - len(head)))
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{name}: corrupt gzip data ({exc or type(exc).__name__})") from None
    if len(data) > limit:
        raise InputError(f"{name}: decompressed image larger than its header says (over {limit / 1024**2:.0f} MB)")
    return data


def _parse(data: bytes, name: str, max_bytes: int) -> nib.Nifti1Image:
    """A single-file NIfTI-1 or NIfTI-2 image from uncompressed bytes, with its voxel data read."""
    if len(data) < 348:
        raise InputError(f"{name}: not a NIfTI image (only {len(data)} bytes; the header alone has 348)")
    nifti2 = 540 in (int.from_bytes(data[:4], "little"), int.from_bytes(data[:4], "big"))
    if data[344:348] != b"n+1\x00" and data[4:8] != b"n+2\x00":
        raise InputError(f"{name}: not a readable NIfTI image (no single-file NIfTI magic; .hdr/.img pairs and "
                         "Analyze files are not supported)")
    klass = nib.Nifti2Image if nifti2 else nib.Nifti1Image
    try:
        with LoggingOutputSuppressor():  # nibabel logs header fixes ("data code ... not recognized") to stderr
            img = klass.from_bytes(data)
            voxels = int(np.prod(img.shape, dtype=np.float64))
            if 4 * voxels > FLOAT_FACTOR * max_bytes:
                raise InputError(f"{name}: image too large ({voxels} voxels, shape {img.shape})")
            img.get_fdata(dtype=np.float32)  # force reading (truncated data fails here)
    except InputError:
        raise
    except Exception as exc:  # nibabel raises many kinds (HeaderDataError, ImageFileError, ValueError, EOFError...)
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise InputError(f"{name}: not a readable NIfTI image ({reason})") from None
    return img


def _squeeze_3d(data: np.ndarray, name: str) -> np.ndarray:
    shape = data.shape
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim > 3:
        vols = int(np.prod(data.shape[3:]))
        raise InputError(f"{name}: 4D image with {vols} volumes (shape {shape}); a single 3D volume is expected")
    if data.ndim < 3 or min(data.shape) == 1:
        raise InputError(f"{name}: 2D image (shape {shape}); a 3D volume is expected")
    if min(data.shape) < MIN_VOXELS:
        raise InputError(f"{name}: image too small (shape {shape}); at least {MIN_VOXELS} voxels per axis are expected")
    return data


def _check_geometry(affine: np.ndarray, name: str) -> tuple[float, float, float]:
    if not np.all(np.isfinite(affine)):
        raise InputError(f"{name}: the affine (voxel-to-world matrix) has non-finite values")
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    if np.any(zooms < VOXEL_MM[0]) or np.any(zooms > VOXEL_MM[1]):
        shown = ", ".join(f"{z:g}" for z in zooms)
        raise InputError(f"{name}: voxel size ({shown}) mm outside {VOXEL_MM[0]:g}-{VOXEL_MM[1]:g} mm")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-6 * float(np.prod(zooms)):
        raise InputError(f"{name}: non-invertible affine (voxel-to-world matrix)")
    return tuple(float(z) for z in zooms)


def _validated(img: nib.Nifti1Image, name: str, allow_constant: bool = False) -> nib.Nifti1Image:
    data = _squeeze_3d(np.asanyarray(img.get_fdata(dtype=np.float32)), name)
    affine = np.asarray(img.affine, float)
    zooms = _check_geometry(affine, name)
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        raise InputError(f"{name}: {bad} non-finite voxel values (NaN or inf)")
    lo, hi = float(data.min()), float(data.max())
    if lo == hi and not allow_constant:
        raise InputError(f"{name}: constant image (every voxel is {lo:g}); a blank or empty scan?")
    out = float_image(data, img)
    if not all(VOXEL_MM[0] <= z <= VOXEL_MM[1] for z in out.header.get_zooms()[:3]):
        out.header.set_zooms(zooms)
    return out


def float_image(data: np.ndarray, like: nib.Nifti1Image) -> nib.Nifti1Image:
    """A float32 NIfTI-1 image of 3D ``data`` with ``like``'s affine, zooms and qform/sform codes (no scaling)."""
    out = nib.Nifti1Image(np.ascontiguousarray(data, np.float32), np.asarray(like.affine, float))
    for kind in ("qform", "sform"):
        code = int(like.header[f"{kind}_code"])
        if code:
            getattr(out, f"set_{kind}")(like.affine, code=code)
    zooms = tuple(float(z) for z in like.header.get_zooms()[:3])
    if len(zooms) == 3 and all(z > 0 for z in zooms):
        out.header.set_zooms(zooms)
    return out


def load_volume(source: str | Path | bytes, name: str | None = None, max_bytes: int = MAX_BYTES) -> nib.Nifti1Image:
    """Load and validate one 3D NIfTI volume (path to ``.nii``/``.nii.gz`` or its raw bytes).

    Returns a float32 3D image with the original affine and zooms (a trailing singleton 4th axis is squeezed).
    Raises :class:`InputError` naming the file for unreadable, non-NIfTI, 2D, multi-volume, tiny, too large,
    non-finite, badly scaled (voxels outside 0.2-10 mm, singular affine) or constant images.
    """
    label = _name_of(source, name)
    raw = _read_source(source, label, max_bytes)
    return _validated(_parse(_inflate(raw, label, max_bytes), label, max_bytes), label)


def load_mask(source: str | Path | bytes | nib.Nifti1Image, reference: nib.Nifti1Image, name: str | None = None,
              max_bytes: int = MAX_BYTES) -> np.ndarray:
    """A brain mask (binary or label map; nonzero = brain) as a bool array in ``reference``'s voxel grid.

    A mask on another grid of the same world space is resampled (nearest neighbour). Refuses an empty mask or
    one that does not overlap the reference, with the same validation as :func:`load_volume`.
    """
    if isinstance(source, nib.Nifti1Image):
        label = name or "mask"
        img = _validated(source, label, allow_constant=True)
    else:
        label = _name_of(source, name)
        raw = _read_source(source, label, max_bytes)
        img = _validated(_parse(_inflate(raw, label, max_bytes), label, max_bytes), label, allow_constant=True)
    data = np.asarray(img.dataobj) != 0
    if not data.any():
        raise InputError(f"{label}: empty mask (no nonzero voxels)")
    ref_shape = tuple(reference.shape[:3])
    if data.shape == ref_shape and np.allclose(img.affine, reference.affine, atol=1e-3):
        return data
    moved = resample_from_to(nib.Nifti1Image(data.astype(np.float32), img.affine), (ref_shape, reference.affine),
                             order=0, mode="constant", cval=0.0)
    out = np.asarray(moved.dataobj) > 0.5
    if not out.any():
        raise InputError(f"{label}: the mask does not overlap the scan (different world space?)")
    return out


def save_nifti(img: nib.Nifti1Image, path: str | Path) -> Path:
    """Write ``img`` to ``path`` (``.nii`` or ``.nii.gz``) atomically; parent folders are created."""
    path = Path(path)
    lower = path.name.lower()
    if lower.endswith(".nii.gz"):
        suffix = ".nii.gz"
    elif lower.endswith(".nii"):
        suffix = ".nii"
    else:
        raise InputError(f"{path.name}: output must end in .nii or .nii.gz")
    write_atomic(path, lambda tmp: nib.save(img, tmp), suffix=suffix)
    return path
