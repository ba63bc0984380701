"""Datasets: read the first N samples from S3, preprocess them per the spec, and keep them on disk.

Formats (spec.data.{calibration,evaluation}.format):
- imageList: `uri` is a prefix; `listFile` (relative to it) has lines "relative/path.jpg label"
  (PaddleClas / ImageNet style; blank lines and lines starting with '#' are skipped; the last
  whitespace-separated field is the label, so paths may contain spaces). Only the first N lines are
  read and only their files fetched, in parallel (storage.fetch_many), in order. Where labels are
  not read (calibration) a line may be a bare path: it is one unless its last field is an integer.
- imagePrefix: every .jpg/.jpeg/.png object under the prefix `uri`, in key order, no labels. The
  listing is paged (ListObjectsV2) only as far as the first N images.
- npz: `uri` is one .npz object with `images` (N,C,H,W or N,H,W,C or N,H,W) and `labels` (N,);
  `labels` may be absent where labels are not read.
  Only the bytes of the first N samples are read (storage.NpzMember): for an uncompressed npz
  (np.savez) by exact Range GETs of the member's data, for a compressed one (np.savez_compressed) by
  a streaming inflate whose over-read is at most one read-ahead block (<= 1 MiB).
  * integer arrays are pixels (0-255) and get the same preprocessing as image files;
  * float arrays are taken as already model-ready tensors: their C,H,W must equal
    spec.model.inputShape and no preprocessing is applied.

Preprocessing (spec.data.preprocess): decode -> channel order -> resize the short side to
resizeShort -> center crop to the model's H,W -> /255 -> (x - mean) / std -> C,H,W float32.
Grayscale images are widened to the model's channels; mean/std may have one entry (broadcast) or
one per model channel. A preprocess that contradicts the model is refused when the data is
preprocessed; for model-ready float tensors only the fields the user set are held against it (the
ImageNet defaults describe nothing about such data).

Samples are written to `<dir>/images.f32` (raw float32, C-order) + `labels.npy` (NO_LABEL where
labels are not read) + `meta.json` and read back one batch at a time, so memory stays flat however
large the evaluation set is.
"""
from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from kubeslim_api.spec import DatasetSpec, Preprocess

from .errors import BadInput
from .storage import NpzMember, Storage, join_uri, open_npz

_IMAGE_CHANNELS = (1, 3, 4)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
NO_LABEL = -1


@dataclass(frozen=True)
class Prep:
    """Preprocessing fixed for one model input (C, H, W)."""
    channels: int
    height: int
    width: int
    resize_short: int
    mean: np.ndarray
    std: np.ndarray
    bgr: bool
    mismatches: tuple[tuple[bool, str], ...] = ()   # (set by the user?, message) per contradiction

    @classmethod
    def from_spec(cls, preprocess: Preprocess, input_shape: list[int] | tuple[int, ...]) -> "Prep":
        c, h, w = (int(v) for v in input_shape)
        given = preprocess.model_fields_set

        def value(name: str, camel: str) -> str:
            default = "" if name in given else " (the default)"
            return f"spec.data.preprocess.{camel} {getattr(preprocess, name)}{default}"

        mismatches = []
        if preprocess.crop != h or preprocess.crop != w:
            mismatches.append(("crop" in given, f"{value('crop', 'crop')} does not match the model input {h}x{w} "
                                                 f"(spec.model.inputShape {list(input_shape)}); set crop to {h}"))
        if preprocess.resize_short < h:
            mismatches.append(("resize_short" in given, f"{value('resize_short', 'resizeShort')} is smaller than the "
                                                         f"crop {h}; set resizeShort >= crop"))
        for name in ("mean", "std"):
            if len(getattr(preprocess, name)) not in (1, c):
                mismatches.append((name in given, f"{value(name, name)} does not fit the model's {c} channel(s); "
                                                  f"give 1 or {c} entries"))
        mean = np.asarray(preprocess.mean, np.float32).reshape(-1, 1, 1)
        std = np.asarray(preprocess.std, np.float32).reshape(-1, 1, 1)
        return cls(c, h, w, preprocess.resize_short, mean, std, preprocess.channel_order == "BGR", tuple(mismatches))

    def require(self, preprocessed: bool) -> None:
        """Refuse a preprocess that contradicts the model: any part of it when the data is
        preprocessed, only what the user set when the data is model-ready."""
        for given, message in self.mismatches:
            if preprocessed or given:
                raise BadInput("PreprocessMismatch", message)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    def pixels(self, img: np.ndarray, rgb: bool = True) -> np.ndarray:
        """HxW or HxWxC integer pixels (RGB order if rgb else BGR) -> C,H,W float32."""
        import cv2

        if img.ndim == 3 and img.shape[2] == 4:
            img = img[:, :, :3]
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[:, :, 0]
        if img.ndim == 3:
            if img.shape[2] != 3:
                raise ValueError(f"{img.shape[2]} channels")
            if self.channels == 1:
                raise ValueError("a colour image for a 1-channel model; convert the data to grayscale")
            if rgb == self.bgr:
                img = img[:, :, ::-1]
        h, w = img.shape[:2]
        short = min(h, w)
        if short != self.resize_short:
            scale = self.resize_short / short
            nh, nw = max(self.height, round(h * scale)), max(self.width, round(w * scale))
            img = cv2.resize(np.ascontiguousarray(img), (nw, nh), interpolation=cv2.INTER_LINEAR)
            h, w = nh, nw
        top, left = (h - self.height) // 2, (w - self.width) // 2
        img = img[top:top + self.height, left:left + self.width]
        x = img.astype(np.float32) / 255.0
        x = x[None, :, :] if x.ndim == 2 else x.transpose(2, 0, 1)
        if x.shape[0] == 1 and self.channels > 1:
            x = np.repeat(x, self.channels, axis=0)
        return np.ascontiguousarray((x - self.mean) / self.std, dtype=np.float32)

    def decode(self, data: bytes) -> np.ndarray:
        import cv2

        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise ValueError("not a decodable JPEG/PNG image")
        if img.dtype == np.uint16:
            img = (img >> 8).astype(np.uint8)
        return self.pixels(img, rgb=False)


@dataclass
class LoadStats:
    samples: int = 0
    bytes_used: int = 0       # bytes of the samples (and list lines) actually used
    bytes_read: int = 0       # bytes received from S3 for this dataset
    source: str = ""


# -- on-disk tensor file -----------------------------------------------------------------------
class TensorFile:
    """The preprocessed samples of one dataset on local disk."""

    def __init__(self, directory: str):
        self.dir = directory
        with open(os.path.join(directory, "meta.json")) as fh:
            self.meta = json.load(fh)
        self.n = int(self.meta["samples"])
        self.shape = tuple(self.meta["shape"])
        self.labels = np.load(os.path.join(directory, "labels.npy"))

    @property
    def labelled(self) -> bool:
        """Whether the labels were read (spec.needs_labels); NO_LABEL fills them otherwise."""
        return bool(self.n) and bool((self.labels != NO_LABEL).all())

    def head(self, n: int) -> "TensorFile":
        """The first n samples (all when fewer), reading the same files."""
        sub = copy.copy(self)
        sub.n = min(n, self.n)
        sub.labels = self.labels[:sub.n]
        return sub

    @staticmethod
    def exists(directory: str) -> bool:
        return os.path.exists(os.path.join(directory, "meta.json"))

    def batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        per = int(np.prod(self.shape))
        n = self.n
        buf = np.empty((batch_size, *self.shape), np.float32)
        with open(os.path.join(self.dir, "images.f32"), "rb", buffering=0) as fh:
            for start in range(0, n, batch_size):
                k = min(batch_size, n - start)
                view = buf[:k]
                got = fh.readinto(memoryview(view.reshape(-1)).cast("B"))
                if got != k * per * 4:
                    raise BadInput("DatasetTruncated", f"{self.dir}/images.f32 ends early; rerun the stage")
                yield view, self.labels[start:start + k]


def _write(directory: str, samples: Iterator[tuple[np.ndarray, int]], prep: Prep, stats: LoadStats,
           key: str) -> TensorFile:
    os.makedirs(directory, exist_ok=True)
    if os.path.exists(os.path.join(directory, "meta.json")):
        os.remove(os.path.join(directory, "meta.json"))   # incomplete until rewritten
    labels: list[int] = []
    tmp = os.path.join(directory, "images.f32.tmp")
    with open(tmp, "wb") as fh:
        for x, y in samples:
            fh.write(x.tobytes())
            labels.append(int(y))
    if not labels:
        raise BadInput("EmptyDataset", f"{stats.source}: no samples")
    os.replace(tmp, os.path.join(directory, "images.f32"))
    np.save(os.path.join(directory, "labels.npy"), np.asarray(labels, np.int64))
    stats.samples = len(labels)
    meta = {"samples": len(labels), "shape": list(prep.sample_shape), "source": stats.source, "key": key,
            "bytesUsed": stats.bytes_used, "bytesRead": stats.bytes_read}
    with open(os.path.join(directory, "meta.json"), "w") as fh:
        json.dump(meta, fh)
    return TensorFile(directory)


def _check_label(label: int, num_classes: int | None, where: str) -> int:
    if label < 0 or (num_classes is not None and label >= num_classes):
        bound = f"[0, {num_classes})" if num_classes is not None else ">= 0"
        raise BadInput("LabelOutOfRange", f"{where}: label {label} is out of range {bound} for this model; fix the label "
                                          "or spec.model numClasses")
    return label


# -- image files -------------------------------------------------------------------------------
def _decoded(storage: Storage, entries: Iterator[tuple[str, tuple[str, int]]], field: str, prep: Prep,
             stats: LoadStats, fix: str) -> Iterator[tuple[np.ndarray, int]]:
    """Fetch (uri, (where, label)) entries in parallel and decode them, in order."""
    prep.require(preprocessed=True)
    for (where, label), data in storage.fetch_many(entries, field):
        stats.bytes_used += len(data)
        try:
            x = prep.decode(data)
        except Exception as exc:
            raise BadInput("CorruptImage", f"{where}: image is unusable ({exc}); {fix}") from None
        yield x, label


def _list_line(text: str, where: str, field: str, labels: bool) -> tuple[str, int]:
    """(relative path, label) of one list line; a bare path where labels are not read."""
    parts = text.rsplit(None, 1)
    try:
        label = int(parts[1]) if len(parts) == 2 else None
    except ValueError:
        label = None
    if not labels:
        return (parts[0] if label is not None else text), NO_LABEL
    if len(parts) != 2:
        raise BadInput("BadListFile", f"{where}: expected 'relative/path label' ({field} needs labels), got {text[:80]!r}")
    if label is None:
        raise BadInput("BadListFile", f"{where}: label {parts[1][:20]!r} is not an integer ({field} needs labels)")
    return parts[0], label


def _image_list(storage: Storage, ds: DatasetSpec, field: str, count: int | None, prep: Prep, num_classes: int | None,
                labels: bool, stats: LoadStats) -> Iterator[tuple[np.ndarray, int]]:
    list_uri = join_uri(ds.uri, ds.list_file)

    def entries() -> Iterator[tuple[str, tuple[str, int]]]:
        taken = 0
        for lineno, line in enumerate(storage.iter_lines(list_uri, f"{field}.listFile"), start=1):
            if count is not None and taken >= count:
                return
            stats.bytes_used += len(line.encode())
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            where = f"{list_uri} line {lineno}"
            path, label = _list_line(text, where, field, labels)
            if labels:
                _check_label(label, num_classes, where)
            taken += 1
            yield join_uri(ds.uri, path), (where, label)

    return _decoded(storage, entries(), f"{field} ({ds.list_file})", prep, stats, "replace the file or remove the line")


def prefix_images(storage: Storage, uri: str, field: str, count: int | None = None) -> Iterator[str]:
    """The first `count` (all if None) JPEG/PNG objects under prefix `uri`, in key order; listing
    pages are requested only as far as they are read."""
    found = 0
    for obj in storage.iter_objects(uri, field, page_size=min(1000, count or 1000)):
        if obj.lower().endswith(IMAGE_SUFFIXES):
            yield obj
            found += 1
            if found == count:
                return
    if not found:
        raise BadInput("EmptyDataset", f"{field} {uri}: no {', '.join(IMAGE_SUFFIXES)} objects under this prefix; "
                                       "upload the images or fix the URI")


def _image_prefix(storage: Storage, ds: DatasetSpec, field: str, count: int | None, prep: Prep,
                  stats: LoadStats) -> Iterator[tuple[np.ndarray, int]]:
    entries = ((uri, (uri, NO_LABEL)) for uri in prefix_images(storage, ds.uri, f"{field}.uri", count))
    return _decoded(storage, entries, f"{field}.uri", prep, stats, "replace or delete the object")


# -- npz ---------------------------------------------------------------------------------------
def _npz(storage: Storage, ds: DatasetSpec, field: str, count: int | None, prep: Prep, num_classes: int | None,
         labels: bool, stats: LoadStats) -> Iterator[tuple[np.ndarray, int]]:
    zf = open_npz(storage, ds.uri, field)
    images = NpzMember(storage, ds.uri, field, zf, "images.npy")
    if len(images.shape) not in (3, 4):
        raise BadInput("BadNpz", f"{field} {ds.uri}: 'images' must be N,C,H,W or N,H,W,C or N,H,W, got "
                                 f"{list(images.shape)}")
    n = images.shape[0] if count is None else min(count, images.shape[0])
    all_labels = np.full(n, NO_LABEL, np.int64)
    if labels:
        lab = NpzMember(storage, ds.uri, field, zf, "labels.npy", f"; {field.removesuffix('.uri')} needs one integer "
                                                                  "label per image")
        if len(lab.shape) != 1 or lab.dtype.kind not in "iu" or lab.shape[0] != images.shape[0]:
            raise BadInput("BadNpz", f"{field} {ds.uri}: 'labels' must be a 1-D integer array with one entry per "
                                     f"image ({images.shape[0]}), got {lab.dtype} {list(lab.shape)}")
        if n:
            all_labels = np.concatenate(list(lab.rows(n, chunk_rows=1 << 20)))
        stats.bytes_used += n * lab.row_bytes
    layout = _layout(images.shape, prep, field, ds.uri, images.dtype)
    prep.require(preprocessed=layout != "tensor")
    stats.bytes_used += n * images.row_bytes
    i = 0
    for block in images.rows(n):
        for arr in block:
            label = _check_label(int(all_labels[i]), num_classes, f"{ds.uri} labels[{i}]") if labels else NO_LABEL
            try:
                if layout == "tensor":
                    x = np.ascontiguousarray(arr, dtype=np.float32)
                else:
                    img = arr.transpose(1, 2, 0) if layout == "NCHW" else arr
                    x = prep.pixels(np.asarray(img, dtype=np.uint8) if img.dtype != np.uint8 else img)
            except ValueError as exc:
                raise BadInput("ShapeMismatch", f"{ds.uri} images[{i}]: {exc}") from None
            yield x, label
            i += 1


def _layout(shape: tuple[int, ...], prep: Prep, field: str, uri: str, dtype: np.dtype) -> str:
    if dtype.kind == "f":
        if tuple(shape[1:]) != prep.sample_shape:
            raise BadInput("ShapeMismatch", f"{field} {uri}: float 'images' are taken as model-ready tensors and must be "
                                            f"N,{','.join(map(str, prep.sample_shape))} (spec.model.inputShape), got "
                                            f"{list(shape)}; store uint8 pixels to have them preprocessed")
        return "tensor"
    if dtype.kind not in "iu":
        raise BadInput("BadNpz", f"{field} {uri}: 'images' has dtype {dtype}; use uint8 pixels or float32 tensors")
    if len(shape) == 3:
        return "NHW"
    if shape[1] in _IMAGE_CHANNELS and shape[3] not in _IMAGE_CHANNELS:
        return "NCHW"
    if shape[3] in _IMAGE_CHANNELS:
        return "NHWC"
    raise BadInput("ShapeMismatch", f"{field} {uri}: cannot tell channels in 'images' of shape {list(shape)}; "
                                    "use N,C,H,W or N,H,W,C with C in 1, 3")


# -- entry point -------------------------------------------------------------------------------
def load(storage: Storage, ds: DatasetSpec, field: str, count: int | None, prep: Prep, directory: str,
         num_classes: int | None = None, labels: bool = True) -> tuple[TensorFile, LoadStats]:
    """Fetch, preprocess and store the first `count` samples (all if None) of dataset spec `ds`
    (spec field path `field`, e.g. spec.data.evaluation) into `directory`; `labels`: whether they
    are read (and so required; spec.needs_labels). Reuses a complete earlier download (a sweep, or
    a retried pod on the same volume)."""
    key = _cache_key(ds, count, prep, labels)
    if TensorFile.exists(directory):
        tf = TensorFile(directory)
        if tf.meta.get("key") == key:
            m = tf.meta
            return tf, LoadStats(tf.n, m.get("bytesUsed", 0), m.get("bytesRead", 0), ds.uri)
    stats = LoadStats(source=ds.uri)
    before = storage.bytes_read
    if ds.format == "npz":
        samples = _npz(storage, ds, field + ".uri", count, prep, num_classes, labels, stats)
    elif ds.format == "imagePrefix":
        samples = _image_prefix(storage, ds, field, count, prep, stats)
    else:
        samples = _image_list(storage, ds, field, count, prep, num_classes, labels, stats)

    def counted():
        for item in samples:
            stats.bytes_read = storage.bytes_read - before
            yield item
        stats.bytes_read = storage.bytes_read - before

    tf = _write(directory, counted(), prep, stats, key)
    return tf, stats


def _cache_key(ds: DatasetSpec, count: int | None, prep: Prep, labels: bool) -> str:
    """What the stored samples depend on: a retried pod or a rerun reuses them only if all match."""
    import hashlib

    parts = [ds.uri, ds.format, ds.list_file, count, prep.sample_shape, prep.resize_short, prep.mean.tolist(),
             prep.std.tolist(), prep.bgr, labels]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]
