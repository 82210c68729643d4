"""IDX files (the MNIST format) and the MNIST / Fashion-MNIST loaders. Nothing is downloaded.

IDX layout: a 4-byte magic number ``00 00 <dtype code> <ndim>``, then ``ndim`` big-endian uint32
dimensions, then the payload in C order, big-endian. Files may be gzip-compressed.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from jaxprop.data.dataset import Dataset
from jaxprop.data.preprocessing import encode_targets

# IDX dtype code -> big-endian numpy dtype
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

CLASS_NAMES = {
    "mnist": tuple(str(i) for i in range(10)),
    "fashion-mnist": (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
}

# sub-folders also searched under data_dir (this package's and torchvision's layouts)
_SUBDIRS = {"mnist": ("mnist", "MNIST/raw"), "fashion-mnist": ("fashion-mnist", "FashionMNIST/raw")}


def read_idx(path) -> np.ndarray:
    """Read an IDX file (raw or gzip) into an array of its shape, in native byte order.

    Raises ``ValueError`` naming the file and the problem for a foreign, corrupt or truncated
    file, ``FileNotFoundError`` when it does not exist.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{path}: corrupt or truncated gzip data ({e})") from None
    if len(raw) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    zero, code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0:
        raise ValueError(
            f"{path}: not an IDX file (magic number 0x{raw[:4].hex()} does not start with 0x0000)"
        )
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise ValueError(f"{path}: unknown IDX data type code 0x{code:02X} (known: {known})")
    if ndim == 0:
        raise ValueError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(
            f"{path}: truncated header: {ndim} dimensions need {header} bytes, file has {len(raw)}"
        )
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(raw) - header
    if found < expected:
        raise ValueError(
            f"{path}: truncated: shape {shape} of {dtype.name} needs {expected} bytes of data, "
            f"found {found}"
        )
    if found > expected:
        raise ValueError(
            f"{path}: {found - expected} unexpected bytes after the data of shape {shape} "
            f"(wrong dimensions in the header?)"
        )
    data = np.frombuffer(raw, dtype=dtype, count=expected // dtype.itemsize, offset=header)
    return data.reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path, array) -> Path:
    """Write ``array`` as an IDX file (gzip-compressed when ``path`` ends in ``.gz``)."""
    path = Path(path)
    array = np.asarray(array)
    codes = {dt.newbyteorder("=").str[1:]: c for c, dt in IDX_DTYPES.items()}
    key = array.dtype.newbyteorder("=").str[1:]
    if key not in codes:
        raise ValueError(f"IDX cannot store dtype {array.dtype} (use uint8, int8, int16, int32, "
                         "float32 or float64)")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"IDX needs 1 to 255 dimensions; got {array.ndim}")
    code = codes[key]
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
    return path


def find_mnist_files(data_dir, kind: str = "mnist") -> dict[str, Path]:
    """Locate the four standard files (raw or ``.gz``) in ``data_dir`` or its ``<kind>/``
    sub-folder (or torchvision's ``MNIST/raw``, ``FashionMNIST/raw``).

    Raises ``FileNotFoundError`` naming what is missing and where it was looked for.
    """
    kind = _check_kind(kind)
    if data_dir is None:
        raise ValueError(
            f"{kind} needs data_dir: a folder holding {', '.join(MNIST_FILES.values())} "
            "(each raw or .gz); jaxprop never downloads"
        )
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{kind} data directory not found: {data_dir}")
    folders = [data_dir] + [data_dir / s for s in _SUBDIRS[kind] if (data_dir / s).is_dir()]
    for folder in folders:
        found, missing = {}, []
        for key, name in MNIST_FILES.items():
            for candidate in (folder / name, folder / f"{name}.gz"):
                if candidate.is_file():
                    found[key] = candidate
                    break
            else:
                missing.append(name)
        if not missing:
            return found
        if found:  # a partial set: report it rather than searching on
            break
    else:
        folder, missing = data_dir, list(MNIST_FILES.values())
    looked = ", ".join(str(f) for f in folders)
    raise FileNotFoundError(
        f"{kind}: missing {', '.join(m + '[.gz]' for m in missing)} in {folder} "
        f"(looked in: {looked}); download the dataset there yourself"
    )


def mnist(data_dir, kind: str = "mnist") -> Dataset:
    """MNIST or Fashion-MNIST from the four standard IDX files in ``data_dir``.

    Official split (60,000 train / 10,000 test for the real files); images ``(n, rows, cols, 1)``
    (NHWC, ``(n, 28, 28, 1)`` for the real files) float32 scaled to [0, 1]; labels 0..9 one-hot
    ``(n, 10)``.
    """
    kind = _check_kind(kind)
    files = find_mnist_files(data_dir, kind)
    images, labels = {}, {}
    for split in ("train", "test"):
        img_path, lab_path = files[f"{split}_images"], files[f"{split}_labels"]
        img, lab = read_idx(img_path), read_idx(lab_path)
        if img.dtype != np.uint8 or img.ndim != 3:
            raise ValueError(f"{img_path}: expected uint8 images of shape (n, rows, cols); "
                             f"got {img.dtype} {img.shape}")
        if lab.dtype != np.uint8 or lab.ndim != 1:
            raise ValueError(f"{lab_path}: expected uint8 labels of shape (n,); "
                             f"got {lab.dtype} {lab.shape}")
        if img.shape[0] == 0:
            raise ValueError(f"{img_path}: holds zero images (an empty {split} set)")
        if img.shape[0] != lab.shape[0]:
            raise ValueError(f"{img_path} has {img.shape[0]} images but {lab_path} has "
                             f"{lab.shape[0]} labels")
        if lab.size and lab.max() > 9:
            row = int(np.argmax(lab > 9))
            raise ValueError(f"{lab_path}: label {lab[row]} at row {row} is not a digit 0..9")
        images[split] = img[..., None].astype(np.float32) / 255.0
        labels[split] = lab.astype(np.int64)
    if images["train"].shape[1:] != images["test"].shape[1:]:
        raise ValueError(f"{kind}: train images are {images['train'].shape[1:3]} but test "
                         f"images are {images['test'].shape[1:3]}")
    return Dataset(
        name=kind,
        x_train=images["train"],
        y_train=encode_targets(labels["train"], 10),
        x_test=images["test"],
        y_test=encode_targets(labels["test"], 10),
        num_classes=10,
        feature_names=None,
        class_names=CLASS_NAMES[kind],
    )


def _check_kind(kind):
    k = str(kind).lower().replace("_", "-")
    if k not in CLASS_NAMES:
        raise ValueError(f"kind must be one of {', '.join(CLASS_NAMES)}; got {kind!r}")
    return k
