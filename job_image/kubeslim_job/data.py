"""Datasets: read the first N samples from S3, preprocess them per the spec, and keep them on disk.

Formats (spec.data.{calibration,evaluation}.format):
- imageList: `uri` is a prefix; `listFile` (relative to it) has lines "relative/path.jpg label"
  (PaddleClas / ImageNet style; blank lines and lines starting with '#' are skipped; the last
  whitespace-separated field is the label, so paths may contain spaces). Only the first N lines are
  read and only their files fetched, in parallel (storage.fetch_many), in order. Where labels are
  not read (calibration) a line may be a bare path: it is one unless its last field is an integer.
- imagePrefix: every .jpg/.jpeg/.png object under the prefix `uri`, in key order, no labels. The
  listing is paged (ListObjectsV2) only as far as the first N images.
- npz: `uri` is one .npz object. Per model input, an array named like the input (first axis =
  samples) is taken as it is: model-ready, of the input's dtype kind (integer/float/bool; cast
  within the kind, e.g. int32 ids to int64) and of a shape the input accepts (fixed dimensions
  equal, -1 dimensions any size). Otherwise the image input (the one float input of one sample
  C,H,W) may come from `images` (N,C,H,W or N,H,W,C or N,H,W; see below), and then a detector's
  `im_shape` / `scale_factor` are filled as PaddleDetection's exporters do. `labels` (N,) may be
  absent where labels are not read; other arrays (targets for your own metric) are ignored.
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

Image formats (imageList, imagePrefix) feed the image input; the only other inputs they can fill
are a detector's `im_shape` ([H, W] of the preprocessed image) and `scale_factor` ([H / original H,
W / original W] of the resize), as PaddleDetection's exporters do; a model with other inputs needs npz.
A dynamic image H/W (-1) takes spec.data.preprocess.crop: images are always resized and cropped as
the spec says, never to fit silently. An npz array is one shape for all its samples, so every batch
holds samples of equal shapes, at the shapes the data has.

Samples are written to one raw C-order file per input (`input-<i>.bin`) + `labels.npy` (NO_LABEL
where labels are not read) + `meta.json` (inputs: name, per-sample shape, dtype) and read back one
batch at a time as {input name: array}, so memory stays flat however large the evaluation set is.
"""
from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from kubeslim_api.spec import DYNAMIC, DatasetSpec, ModelInput, Preprocess

from .errors import BadInput
from .storage import NpzMember, Storage, join_uri, open_npz

_IMAGE_CHANNELS = (1, 3, 4)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
NO_LABEL = -1
IMAGE_FEED = "x"                       # the feed name of a model exported from spec.model.inputShape
DETECTION_EXTRAS = ("im_shape", "scale_factor")
# npz array kinds a feed dtype accepts (numpy dtype.kind): values are cast within a kind only
_KINDS = {"f": "f", "i": "iu", "u": "iu", "b": "b"}


def image_input(inputs: list[ModelInput]) -> ModelInput | None:
    """The input image data feeds: the one float input whose sample is C,H,W (None if none or several)."""
    found = [i for i in inputs if i.dtype.startswith("float") and len(i.shape) == 3]
    return found[0] if len(found) == 1 else None


def image_inputs(shape: list[int] | tuple[int, ...]) -> list[ModelInput]:
    """The inputs of a model given by spec.model.inputShape: one float32 image."""
    return [ModelInput(name=IMAGE_FEED, shape=[int(d) for d in shape], dtype="float32")]


def prep_for(preprocess: Preprocess, inputs: list[ModelInput]) -> "Prep | None":
    """The preprocessing of the model's image input (None: the model has no image input). A
    dynamic H or W takes preprocess.crop, a dynamic C three channels."""
    img = image_input(inputs)
    if img is None:
        return None
    c, h, w = img.shape
    return Prep.from_spec(preprocess, (3 if c == DYNAMIC else c, preprocess.crop if h == DYNAMIC else h,
                                       preprocess.crop if w == DYNAMIC else w))


def fits(shape: tuple[int, ...], declared: list[int]) -> bool:
    """Whether a sample shape is one the input accepts: same rank, fixed dimensions equal."""
    return len(shape) == len(declared) and all(d == DYNAMIC or d == s for s, d in zip(shape, declared))


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
        nh, nw = self.resized(h, w)
        if (nh, nw) != (h, w):
            img = cv2.resize(np.ascontiguousarray(img), (nw, nh), interpolation=cv2.INTER_LINEAR)
            h, w = nh, nw
        top, left = (h - self.height) // 2, (w - self.width) // 2
        img = img[top:top + self.height, left:left + self.width]
        x = img.astype(np.float32) / 255.0
        x = x[None, :, :] if x.ndim == 2 else x.transpose(2, 0, 1)
        if x.shape[0] == 1 and self.channels > 1:
            x = np.repeat(x, self.channels, axis=0)
        return np.ascontiguousarray((x - self.mean) / self.std, dtype=np.float32)

    def resized(self, h: int, w: int) -> tuple[int, int]:
        """The size an h x w image is resized to before the center crop (short side to resizeShort)."""
        short = min(h, w)
        if short == self.resize_short:
            return h, w
        scale = self.resize_short / short
        return max(self.height, round(h * scale)), max(self.width, round(w * scale))

    def extras(self, h: int, w: int, inputs: list[ModelInput]) -> dict[str, np.ndarray]:
        """A detector's im_shape and scale_factor for an h x w original image, as PaddleDetection's
        exporters compute them: the preprocessed image's [H, W], and [resized H / h, resized W / w]."""
        nh, nw = self.resized(h, w)
        values = {"im_shape": (self.height, self.width), "scale_factor": (nh / h, nw / w)}
        return {i.name: np.asarray(values[i.name], i.dtype) for i in inputs if i.name in values}

    def decode(self, data: bytes) -> np.ndarray:
        return self.pixels(imdecode(data), rgb=False)


def imdecode(data: bytes) -> np.ndarray:
    """JPEG/PNG bytes -> HxW or HxWxC uint8 pixels in BGR order."""
    import cv2

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError("not a decodable JPEG/PNG image")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    return img


@dataclass
class LoadStats:
    samples: int = 0
    bytes_used: int = 0       # bytes of the samples (and list lines) actually used
    bytes_read: int = 0       # bytes received from S3 for this dataset
    source: str = ""


# -- on-disk tensor file -----------------------------------------------------------------------
Sample = dict[str, np.ndarray]          # one sample: input name -> array (no batch dimension)


def _input_file(directory: str, index: int) -> str:
    return os.path.join(directory, f"input-{index}.bin")


class TensorFile:
    """The preprocessed samples of one dataset on local disk: per input, its samples of one shape."""

    def __init__(self, directory: str):
        self.dir = directory
        with open(os.path.join(directory, "meta.json")) as fh:
            self.meta = json.load(fh)
        self.n = int(self.meta["samples"])
        self.inputs = [ModelInput.model_validate(i) for i in self.meta["inputs"]]
        self.labels = np.load(os.path.join(directory, "labels.npy"))

    @property
    def shapes(self) -> dict[str, list[int]]:
        """Each input's sample shape as stored (the shapes the model is calibrated and verified at)."""
        return {i.name: list(i.shape) for i in self.inputs}

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

    def sample(self, index: int) -> Sample:
        """One sample by index (the calibration DataLoader's random access)."""
        out = {}
        for i, inp in enumerate(self.inputs):
            dtype = np.dtype(inp.dtype)
            per = int(np.prod(inp.shape, dtype=np.int64))
            arr = np.fromfile(_input_file(self.dir, i), dtype, count=per, offset=index * per * dtype.itemsize)
            out[inp.name] = arr.reshape(inp.shape)
        return out

    def batches(self, batch_size: int) -> Iterator[tuple[Sample, np.ndarray]]:
        """({input name: batch array}, labels) of up to batch_size samples, in order. The arrays are
        reused buffers: copy what must outlive the next step."""
        n = self.n
        bufs = [np.empty((batch_size, *i.shape), np.dtype(i.dtype)) for i in self.inputs]
        handles = [open(_input_file(self.dir, i), "rb", buffering=0) for i in range(len(self.inputs))]
        try:
            for start in range(0, n, batch_size):
                k = min(batch_size, n - start)
                feeds = {}
                for inp, buf, fh in zip(self.inputs, bufs, handles):
                    view = buf[:k]
                    if fh.readinto(memoryview(view.reshape(-1)).cast("B")) != view.nbytes:
                        raise BadInput("DatasetTruncated", f"{fh.name} ends early; rerun the stage")
                    feeds[inp.name] = view
                yield feeds, self.labels[start:start + k]
        finally:
            for fh in handles:
                fh.close()


def _write(directory: str, samples: Iterator[tuple[Sample, int]], stats: LoadStats, key: str) -> TensorFile:
    """Store the samples (each {input name: array} and a label); the first sample fixes each input's
    shape and dtype, which every later one must have (a batch is one array per input)."""
    os.makedirs(directory, exist_ok=True)
    if os.path.exists(os.path.join(directory, "meta.json")):
        os.remove(os.path.join(directory, "meta.json"))   # incomplete until rewritten
    labels: list[int] = []
    layout: list[ModelInput] = []
    handles: list = []
    try:
        for sample, y in samples:
            if not layout:
                layout = [ModelInput(name=k, shape=list(v.shape), dtype=str(v.dtype)) for k, v in sample.items()]
                handles = [open(_input_file(directory, i) + ".tmp", "wb") for i in range(len(layout))]
            for inp, fh in zip(layout, handles):
                arr = sample[inp.name]
                if list(arr.shape) != inp.shape or str(arr.dtype) != inp.dtype:
                    raise BadInput("ShapeMismatch", f"{stats.source}: sample {len(labels)} of input {inp.name} is "
                                                    f"{arr.dtype} {list(arr.shape)}, earlier ones {inp.dtype} {inp.shape}")
                fh.write(np.ascontiguousarray(arr).tobytes())
            labels.append(int(y))
    finally:
        for fh in handles:
            fh.close()
    if not labels:
        raise BadInput("EmptyDataset", f"{stats.source}: no samples")
    for i in range(len(layout)):
        os.replace(_input_file(directory, i) + ".tmp", _input_file(directory, i))
    np.save(os.path.join(directory, "labels.npy"), np.asarray(labels, np.int64))
    stats.samples = len(labels)
    meta = {"samples": len(labels), "inputs": [i.model_dump() for i in layout], "source": stats.source, "key": key,
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
@dataclass(frozen=True)
class ImageFeed:
    """How one image fills the model's inputs: the image input, and a detector's extras computed
    from the image's original size."""
    prep: Prep
    image: ModelInput
    extras: tuple[ModelInput, ...] = ()

    def sample(self, img: np.ndarray, rgb: bool = True) -> Sample:
        h, w = img.shape[:2]
        return {self.image.name: self.prep.pixels(img, rgb), **self.prep.extras(h, w, list(self.extras))}


def _image_feed(inputs: list[ModelInput], prep: Prep | None, field: str, what: str) -> ImageFeed:
    """The ImageFeed of a model fed from images (`what` names the image source), or BadInput naming
    the inputs images cannot fill."""
    img = image_input(inputs)
    others = [i for i in inputs if i is not img and i.name not in DETECTION_EXTRAS]
    if img is None or prep is None or others:
        need = ", ".join(f"{i.name} ({i.dtype} {i.shape})" for i in (others or inputs))
        raise BadInput("UnsupportedInputs", f"{field}: {what} feed one float C,H,W image input (and a detector's "
                                            f"im_shape/scale_factor), but the model's input(s) {need} need other data; "
                                            "use format npz with one array per input name (first axis = samples)")
    extras = tuple(i for i in inputs if i.name in DETECTION_EXTRAS)
    for i in extras:
        if not fits((2,), i.shape):
            raise BadInput("ShapeMismatch", f"{field}: the model input {i.name} has shape {i.shape} per sample, not [2] "
                                            f"as PaddleDetection's; give it as an array '{i.name}' in an npz")
    return ImageFeed(prep, img, extras)


def _decoded(storage: Storage, entries: Iterator[tuple[str, tuple[str, int]]], field: str, feed: ImageFeed,
             stats: LoadStats, fix: str) -> Iterator[tuple[Sample, int]]:
    """Fetch (uri, (where, label)) entries in parallel and decode them, in order."""
    feed.prep.require(preprocessed=True)
    for (where, label), data in storage.fetch_many(entries, field):
        stats.bytes_used += len(data)
        try:
            x = feed.sample(imdecode(data), rgb=False)
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


def _image_list(storage: Storage, ds: DatasetSpec, field: str, count: int | None, feed: ImageFeed,
                num_classes: int | None, labels: bool, stats: LoadStats) -> Iterator[tuple[Sample, int]]:
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

    return _decoded(storage, entries(), f"{field} ({ds.list_file})", feed, stats, "replace the file or remove the line")


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


def _image_prefix(storage: Storage, ds: DatasetSpec, field: str, count: int | None, feed: ImageFeed,
                  stats: LoadStats) -> Iterator[tuple[Sample, int]]:
    entries = ((uri, (uri, NO_LABEL)) for uri in prefix_images(storage, ds.uri, f"{field}.uri", count))
    return _decoded(storage, entries, f"{field}.uri", feed, stats, "replace or delete the object")


# -- npz ---------------------------------------------------------------------------------------
def _rows(member: NpzMember, n: int) -> Iterator[np.ndarray]:
    for block in member.rows(n):
        yield from block


def _npz_sources(arrays: list[str], inputs: list[ModelInput], field: str, uri: str) -> tuple[set[str], bool]:
    """Which inputs an npz holding `arrays` feeds by name, and whether the image input comes from
    its `images`; BadInput naming the first input it cannot feed."""
    img = image_input(inputs)
    named = {i.name for i in inputs if i.name in arrays}
    from_images = img is not None and img.name not in named and "images" in arrays
    for i in inputs:
        if i.name not in named and not (from_images and (i is img or i.name in DETECTION_EXTRAS)):
            raise BadInput("BadNpz", f"{field} {uri}: has no array '{i.name}' for the model input {i.name} ({i.dtype}, "
                                     f"{i.shape} per sample; found: {', '.join(arrays) or 'none'}); save one array per "
                                     f"input name, first axis = samples: np.savez(path, {i.name}=...)")
    return named, from_images


def check_npz(storage: Storage, ds: DatasetSpec, field: str, inputs: list[ModelInput]) -> None:
    """Refuse an npz dataset that cannot feed the model's inputs before any calibration: only the
    zip directory is read. `field`: e.g. spec.data.evaluation."""
    if ds.format == "npz":
        zf = open_npz(storage, ds.uri, f"{field}.uri")
        _npz_sources([n.removesuffix(".npy") for n in zf.namelist()], inputs, f"{field}.uri", ds.uri)


def _npz(storage: Storage, ds: DatasetSpec, field: str, count: int | None, inputs: list[ModelInput], prep: Prep | None,
         num_classes: int | None, labels: bool, stats: LoadStats) -> Iterator[tuple[Sample, int]]:
    zf = open_npz(storage, ds.uri, field)
    arrays = [n.removesuffix(".npy") for n in zf.namelist()]
    named, from_images = _npz_sources(arrays, inputs, field, ds.uri)
    raw = {i.name: NpzMember(storage, ds.uri, field, zf, i.name + ".npy") for i in inputs if i.name in named}
    for i in inputs:
        m = raw.get(i.name)
        if m is None:
            continue
        if m.dtype.kind not in _KINDS[np.dtype(i.dtype).kind]:
            raise BadInput("DtypeMismatch", f"{field} {ds.uri}: '{i.name}' is {m.dtype} but the model input {i.name} "
                                            f"takes {i.dtype}; save it as {i.dtype} (np.asarray(a, '{i.dtype}'))")
        if len(m.shape) < 1 or not fits(m.shape[1:], i.shape):
            raise BadInput("ShapeMismatch", f"{field} {ds.uri}: '{i.name}' holds samples of shape {list(m.shape[1:])} but "
                                            f"the model input {i.name} takes {i.shape} (-1: any size; the first axis is "
                                            "the samples); fix the array or spec.model.inputs")
    images = NpzMember(storage, ds.uri, field, zf, "images.npy") if from_images else None
    members = {**raw, **({"images": images} if images is not None else {})}
    counts = {k: m.shape[0] for k, m in members.items()}
    if len(set(counts.values())) > 1:
        raise BadInput("BadNpz", f"{field} {ds.uri}: its arrays hold different numbers of samples "
                                 f"({', '.join(f'{k} {v}' for k, v in counts.items())}); the first axis is the sample axis")
    total = next(iter(counts.values()))
    n = total if count is None else min(count, total)
    feed = layout = None
    if images is not None:
        if len(images.shape) not in (3, 4):
            raise BadInput("BadNpz", f"{field} {ds.uri}: 'images' must be N,C,H,W or N,H,W,C or N,H,W, got "
                                     f"{list(images.shape)}")
        feed = _image_feed([i for i in inputs if i.name not in raw], prep, field, "'images'")
        layout = _layout(images.shape, feed.prep, field, ds.uri, images.dtype)
        if layout == "tensor" and feed.extras:
            raise BadInput("BadNpz", f"{field} {ds.uri}: float 'images' are model-ready, so their original size is "
                                     f"unknown and {', '.join(i.name for i in feed.extras)} cannot be computed; store "
                                     "uint8 pixels, or add those arrays to the npz")
        feed.prep.require(preprocessed=layout != "tensor")
    all_labels = np.full(n, NO_LABEL, np.int64)
    if labels:
        lab = NpzMember(storage, ds.uri, field, zf, "labels.npy", f"; {field.removesuffix('.uri')} needs one integer "
                                                                  "label per sample")
        if len(lab.shape) != 1 or lab.dtype.kind not in "iu" or lab.shape[0] != total:
            raise BadInput("BadNpz", f"{field} {ds.uri}: 'labels' must be a 1-D integer array with one entry per "
                                     f"sample ({total}), got {lab.dtype} {list(lab.shape)}")
        if n:
            all_labels = np.concatenate(list(lab.rows(n, chunk_rows=1 << 20)))
        stats.bytes_used += n * lab.row_bytes
    stats.bytes_used += n * sum(m.row_bytes for m in members.values())
    rows = {k: _rows(m, n) for k, m in members.items()}
    dtypes = {i.name: np.dtype(i.dtype) for i in inputs}
    for idx in range(n):
        label = _check_label(int(all_labels[idx]), num_classes, f"{ds.uri} labels[{idx}]") if labels else NO_LABEL
        sample = {name: np.asarray(next(rows[name]), dtypes[name]) for name in raw}
        if feed is not None:
            arr = next(rows["images"])
            try:
                if layout == "tensor":
                    sample[feed.image.name] = np.ascontiguousarray(arr, dtype=np.float32)
                else:
                    img = arr.transpose(1, 2, 0) if layout == "NCHW" else arr
                    sample.update(feed.sample(np.asarray(img, dtype=np.uint8) if img.dtype != np.uint8 else img))
            except ValueError as exc:
                raise BadInput("ShapeMismatch", f"{ds.uri} images[{idx}]: {exc}") from None
        yield {i.name: sample[i.name] for i in inputs}, label


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
def load(storage: Storage, ds: DatasetSpec, field: str, count: int | None, prep: Prep | None, directory: str,
         num_classes: int | None = None, labels: bool = True,
         inputs: list[ModelInput] | None = None) -> tuple[TensorFile, LoadStats]:
    """Fetch, preprocess and store the first `count` samples (all if None) of dataset spec `ds`
    (spec field path `field`, e.g. spec.data.evaluation) into `directory`, for the model `inputs`
    (default: one image input of prep's shape; `prep` is the image input's preprocessing, None where
    the model has none); `labels`: whether they are read (and so required; spec.needs_labels).
    Reuses a complete earlier download (a sweep, or a retried pod on the same volume)."""
    if inputs is None:
        assert prep is not None, "a model without inputs given has one image input, preprocessed by prep"
        inputs = image_inputs(prep.sample_shape)
    key = _cache_key(ds, count, prep, labels, inputs)
    if TensorFile.exists(directory):
        tf = TensorFile(directory)
        if tf.meta.get("key") == key:
            m = tf.meta
            return tf, LoadStats(tf.n, m.get("bytesUsed", 0), m.get("bytesRead", 0), ds.uri)
    stats = LoadStats(source=ds.uri)
    before = storage.bytes_read
    if ds.format == "npz":
        samples = _npz(storage, ds, field + ".uri", count, inputs, prep, num_classes, labels, stats)
    elif ds.format == "imagePrefix":
        samples = _image_prefix(storage, ds, field, count, _image_feed(inputs, prep, f"{field}.format", "images"), stats)
    else:
        samples = _image_list(storage, ds, field, count, _image_feed(inputs, prep, f"{field}.format", "images"),
                              num_classes, labels, stats)

    def counted():
        for item in samples:
            stats.bytes_read = storage.bytes_read - before
            yield item
        stats.bytes_read = storage.bytes_read - before

    tf = _write(directory, counted(), stats, key)
    return tf, stats


def _cache_key(ds: DatasetSpec, count: int | None, prep: Prep | None, labels: bool, inputs: list[ModelInput]) -> str:
    """What the stored samples depend on: a retried pod or a rerun reuses them only if all match."""
    import hashlib

    pp = [prep.sample_shape, prep.resize_short, prep.mean.tolist(), prep.std.tolist(), prep.bgr] if prep else None
    parts = [ds.uri, ds.format, ds.list_file, count, pp, labels, [i.model_dump() for i in inputs]]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]
