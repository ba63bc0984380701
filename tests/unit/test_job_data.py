"""Datasets without a server: preprocessing, npz and imageList parsing, and the errors that name
the file and line. Objects live in memory (job_fakes.MemStorage)."""
from __future__ import annotations

import io
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from kubeslim_job import data
from kubeslim_job.errors import BadInput
from kubeslim_api.spec import ModelInput, Preprocess

from job_fakes import MemStorage


def prep(shape=(1, 8, 8), resize=8, crop=8, mean=(0.5,), std=(0.5,), order="RGB"):
    return data.Prep.from_spec(Preprocess(resize_short=resize, crop=crop, mean=list(mean), std=list(std),
                                          channel_order=order), shape)


def npz(images, labels, compressed=False) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, images=images, labels=labels)
    return buf.getvalue()


def png(img) -> bytes:
    ok, enc = cv2.imencode(".png", img)
    assert ok
    return enc.tobytes()


def ds(uri, fmt="npz", list_file=None):
    return SimpleNamespace(uri=uri, format=fmt, list_file=list_file)


def test_pixels_normalise_and_widen_gray():
    p = prep(shape=(3, 4, 4), resize=4, crop=4, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 0.5))
    x = p.pixels(np.full((4, 4), 255, np.uint8))
    assert x.shape == (3, 4, 4) and x.dtype == np.float32
    assert np.allclose(x[0], 1.0) and np.allclose(x[1], 2.0)


def test_resize_short_side_then_center_crop():
    img = np.zeros((16, 32), np.uint8)
    img[:, 12:20] = 255                         # a bright centre band survives the crop
    x = prep(shape=(1, 4, 4), resize=8, crop=4, mean=(0,), std=(1,)).pixels(img)
    assert x.shape == (1, 4, 4) and x[0, :, 1:3].min() > 0.9


def test_bgr_order_flips_channels():
    img = np.zeros((2, 2, 3), np.uint8)
    img[..., 0] = 255                           # red in RGB
    rgb = prep((3, 2, 2), 2, 2, (0,), (1,), "RGB").pixels(img, rgb=True)
    bgr = prep((3, 2, 2), 2, 2, (0,), (1,), "BGR").pixels(img, rgb=True)
    assert rgb[0].max() == 1.0 and bgr[2].max() == 1.0 and bgr[0].max() == 0.0


@pytest.mark.parametrize("kwargs, words", [
    ({"crop": 6}, ["spec.data.preprocess.crop", "set crop to 8"]),
    ({"resize": 4, "crop": 8}, ["resizeShort 4"]),
    ({"mean": (0.1, 0.2)}, ["spec.data.preprocess.mean", "1 channel"]),
])
def test_preprocess_mismatch(kwargs, words):
    with pytest.raises(BadInput) as ei:
        prep(**kwargs).require(preprocessed=True)
    assert all(w in ei.value.message for w in words)


@pytest.mark.parametrize("preprocess, images, error", [
    # float tensors are model-ready: the ImageNet defaults (crop 224, 3-entry mean) say nothing about them
    ({}, np.zeros((4, 1, 8, 8), np.float32), None),
    ({"crop": 8, "resize_short": 8}, np.zeros((4, 1, 8, 8), np.float32), None),
    # ...but what the user set and contradicts the model is still refused
    ({"crop": 6}, np.zeros((4, 1, 8, 8), np.float32), "spec.data.preprocess.crop 6 does not match the model input 8x8"),
    ({"mean": [0.1, 0.2], "std": [1.0, 1.0]}, np.zeros((4, 1, 8, 8), np.float32), "spec.data.preprocess.mean [0.1, 0.2]"),
    # pixels are preprocessed, so the defaults apply and must fit
    ({}, np.zeros((4, 8, 8), np.uint8), "spec.data.preprocess.crop 224 (the default) does not match the model input 8x8"),
])
def test_preprocess_is_held_against_the_model_only_where_it_applies(tmp_path, preprocess, images, error):
    p = data.Prep.from_spec(Preprocess(**preprocess), (1, 8, 8))
    st = MemStorage({"s3://b/f.npz": npz(images, np.zeros(4, np.int64))})
    load = lambda: data.load(st, ds("s3://b/f.npz"), "spec.data.calibration", None, p, str(tmp_path / "c"), 10)  # noqa: E731
    if error is None:
        assert load()[0].n == 4
    else:
        with pytest.raises(BadInput) as ei:
            load()
        assert ei.value.reason == "PreprocessMismatch" and error in ei.value.message, ei.value.message


@pytest.mark.parametrize("layout", ["NHW", "NCHW", "NHWC"])
@pytest.mark.parametrize("compressed", [False, True])
def test_npz_reads_only_the_samples_it_uses(tmp_path, layout, compressed):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (2000, 8, 8), dtype=np.uint8)
    arr = {"NHW": imgs, "NCHW": imgs[:, None], "NHWC": imgs[:, :, :, None]}[layout]
    labels = rng.integers(0, 10, 2000)
    st = MemStorage({"s3://b/d.npz": npz(arr, labels, compressed)})
    tf, stats = data.load(st, ds("s3://b/d.npz"), "spec.data.calibration", 100, prep(), str(tmp_path / "c"), 10)
    assert tf.n == 100 and stats.bytes_used == 100 * (64 + 8)
    if not compressed:   # exact ranges; compressed streams may read one block ahead
        assert stats.bytes_read <= 1.2 * stats.bytes_used + 1024
    feeds, y = next(tf.batches(100))
    assert np.array_equal(y, labels[:100])
    assert np.allclose(feeds[data.IMAGE_FEED][:, 0], (imgs[:100] / 255.0 - 0.5) / 0.5, atol=1e-6)


def test_npz_float_tensors_must_match_the_model(tmp_path):
    st = MemStorage({"s3://b/f.npz": npz(np.zeros((4, 1, 6, 6), np.float32), np.zeros(4, np.int64))})
    with pytest.raises(BadInput) as ei:
        data.load(st, ds("s3://b/f.npz"), "spec.data.evaluation", None, prep(), str(tmp_path / "e"))
    assert ei.value.reason == "ShapeMismatch" and "[4, 1, 6, 6]" in ei.value.message and "1,8,8" in ei.value.message


def test_npz_float_tensors_pass_through(tmp_path):
    t = np.random.default_rng(1).normal(size=(5, 1, 8, 8)).astype(np.float32)
    st = MemStorage({"s3://b/f.npz": npz(t, np.arange(5))})
    tf, _ = data.load(st, ds("s3://b/f.npz"), "spec.data.evaluation", None, prep(), str(tmp_path / "e"), 10)
    assert np.array_equal(next(tf.batches(5))[0][data.IMAGE_FEED], t)


def test_npz_label_out_of_range_names_the_index(tmp_path):
    st = MemStorage({"s3://b/d.npz": npz(np.zeros((4, 8, 8), np.uint8), np.array([1, 2, 10, 3]))})
    with pytest.raises(BadInput) as ei:
        data.load(st, ds("s3://b/d.npz"), "spec.data.evaluation", None, prep(), str(tmp_path / "e"), 10)
    assert "labels[2]" in ei.value.message and "[0, 10)" in ei.value.message


def test_npz_missing_array(tmp_path):
    buf = io.BytesIO()
    np.savez(buf, other=np.zeros(3))
    st = MemStorage({"s3://b/d.npz": buf.getvalue()})
    with pytest.raises(BadInput, match="has no array 'x' for the model input x .*found: other.*np.savez"):
        data.load(st, ds("s3://b/d.npz"), "spec.data.evaluation", None, prep(), str(tmp_path / "e"))


def _npz_of(**arrays) -> MemStorage:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return MemStorage({"s3://b/m.npz": buf.getvalue()})


TWO_INPUTS = [ModelInput(name="input_ids", shape=[-1], dtype="int64"), ModelInput(name="mask", shape=[-1], dtype="float32")]


def test_npz_keyed_by_input_name_feeds_every_input_at_the_data_shape(tmp_path):
    ids = np.arange(6 * 5, dtype=np.int32).reshape(6, 5)          # int32 ids for an int64 input: same kind, cast
    mask = np.ones((6, 5), np.float64)
    st = _npz_of(input_ids=ids, mask=mask, targets=np.zeros(6))      # targets: not an input, ignored
    tf, stats = data.load(st, ds("s3://b/m.npz"), "spec.data.calibration", 4, None, str(tmp_path / "c"),
                          labels=False, inputs=TWO_INPUTS)
    assert tf.n == 4 and tf.shapes == {"input_ids": [5], "mask": [5]}     # the dynamic dim takes the data's size
    feeds, _ = next(tf.batches(3))
    assert feeds["input_ids"].dtype == np.int64 and np.array_equal(feeds["input_ids"], ids[:3])
    assert feeds["mask"].dtype == np.float32 and stats.bytes_used == 4 * 5 * (4 + 8)
    assert np.array_equal(tf.sample(3)["input_ids"], ids[3])


@pytest.mark.parametrize("arrays, reason, words", [
    ({"input_ids": np.zeros((3, 5), np.float32), "mask": np.ones((3, 5), np.float32)}, "DtypeMismatch",
     ["'input_ids' is float32", "takes int64", "np.asarray(a, 'int64')"]),
    ({"input_ids": np.zeros((3, 5, 2), np.int64), "mask": np.ones((3, 5), np.float32)}, "ShapeMismatch",
     ["'input_ids' holds samples of shape [5, 2]", "takes [-1]"]),
    ({"input_ids": np.zeros((3, 5), np.int64)}, "BadNpz", ["has no array 'mask' for the model input mask", "found: input_ids"]),
    ({"input_ids": np.zeros((3, 5), np.int64), "mask": np.ones((4, 5), np.float32)}, "BadNpz",
     ["different numbers of samples", "input_ids 3", "mask 4"]),
])
def test_npz_for_named_inputs_refuses_what_the_model_cannot_take(tmp_path, arrays, reason, words):
    with pytest.raises(BadInput) as ei:
        data.load(_npz_of(**arrays), ds("s3://b/m.npz"), "spec.data.evaluation", None, None, str(tmp_path / "e"),
                  labels=False, inputs=TWO_INPUTS)
    assert ei.value.reason == reason and "spec.data.evaluation.uri s3://b/m.npz" in ei.value.message
    assert all(w in ei.value.message for w in words), ei.value.message


DETECTOR = [ModelInput(name="image", shape=[3, -1, -1]), ModelInput(name="scale_factor", shape=[2]),
            ModelInput(name="im_shape", shape=[2])]


def test_detector_extras_are_computed_from_each_images_original_size(tmp_path):
    p = data.prep_for(Preprocess(resize_short=8, crop=8, mean=[0.5], std=[0.5]), DETECTOR)
    assert p.sample_shape == (3, 8, 8)                               # dynamic H, W take the crop
    st = _image_list("a.png 0\nb.png 1\n", {"a.png": png(np.zeros((16, 32, 3), np.uint8)),
                                             "b.png": png(np.zeros((8, 8, 3), np.uint8))})
    tf, _ = data.load(st, ds("s3://b/p/", "imageList", "list.txt"), "spec.data.evaluation", None, p,
                      str(tmp_path / "e"), labels=False, inputs=DETECTOR)
    feeds, _ = next(tf.batches(2))
    assert feeds["image"].shape == (2, 3, 8, 8)
    assert feeds["scale_factor"].tolist() == [[0.5, 0.5], [1.0, 1.0]]   # 16x32 resized to 8x16, then cropped
    assert feeds["im_shape"].tolist() == [[8.0, 8.0], [8.0, 8.0]]


def test_images_cannot_feed_a_model_with_other_inputs(tmp_path):
    st = _image_list("a.png 0\n", {"a.png": png(np.zeros((8, 8), np.uint8))})
    with pytest.raises(BadInput) as ei:
        data.load(st, ds("s3://b/p/", "imageList", "list.txt"), "spec.data.evaluation", None, prep(),
                  str(tmp_path / "e"), labels=False, inputs=[*data.image_inputs([1, 8, 8]), *TWO_INPUTS])
    assert ei.value.reason == "UnsupportedInputs" and "spec.data.evaluation.format" in ei.value.message
    assert "input_ids (int64 [-1])" in ei.value.message and "format npz" in ei.value.message


def _image_list(lines: str, files: dict[str, bytes]) -> MemStorage:
    return MemStorage({"s3://b/p/list.txt": lines.encode(), **{f"s3://b/p/{k}": v for k, v in files.items()}})


def test_image_list_reads_the_first_lines_only(tmp_path):
    files = {f"img/{i}.png": png(np.full((8, 8), i, np.uint8)) for i in range(20)}
    lines = "# comment\n\n" + "".join(f"img/{i}.png {i % 10}\n" for i in range(20))
    st = _image_list(lines, files)
    tf, stats = data.load(st, ds("s3://b/p/", "imageList", "list.txt"), "spec.data.calibration", 5, prep(),
                          str(tmp_path / "c"), 10)
    assert tf.n == 5 and list(tf.labels) == [0, 1, 2, 3, 4]
    assert stats.bytes_read <= len(lines) + sum(len(files[f"img/{i}.png"]) for i in range(5))


def test_image_list_paths_with_spaces_and_gray_png(tmp_path):
    st = _image_list("my dir/a b.png 3\n", {"my dir/a b.png": png(np.zeros((8, 8), np.uint8))})
    tf, _ = data.load(st, ds("s3://b/p/", "imageList", "list.txt"), "spec.data.evaluation", None,
                      prep((3, 8, 8), mean=(0.5,) * 3, std=(0.5,) * 3), str(tmp_path / "e"), 10)
    assert tf.shapes == {data.IMAGE_FEED: [3, 8, 8]} and list(tf.labels) == [3]


@pytest.mark.parametrize("lines, files, reason, words", [
    ("a.png 1\nb.png 2\n", {"a.png": "ok", "b.png": b"garbage"}, "CorruptImage", ["list.txt line 2"]),
    ("a.png 1\na.png 11\n", {"a.png": "ok"}, "LabelOutOfRange", ["list.txt line 2", "label 11"]),
    ("a.png one\n", {"a.png": "ok"}, "BadListFile", ["list.txt line 1", "'one'"]),
    ("justapath\n", {}, "BadListFile", ["line 1", "relative/path label"]),
    ("a.png 1\nmissing.png 2\n", {"a.png": "ok"}, "NoSuchKey", ["s3://b/p/missing.png"]),
])
def test_image_list_errors_name_file_and_line(tmp_path, lines, files, reason, words):
    ok = png(np.zeros((8, 8), np.uint8))
    st = _image_list(lines, {k: (ok if v == "ok" else v) for k, v in files.items()})
    with pytest.raises(BadInput) as ei:
        data.load(st, ds("s3://b/p/", "imageList", "list.txt"), "spec.data.evaluation", None, prep(),
                  str(tmp_path / "e"), 10)
    assert ei.value.reason == reason
    assert all(w in ei.value.message for w in words), ei.value.message


def test_colour_image_for_a_gray_model_is_refused(tmp_path):
    st = _image_list("a.png 1\n", {"a.png": png(np.zeros((8, 8, 3), np.uint8))})
    with pytest.raises(BadInput, match="line 1.*grayscale"):
        data.load(st, ds("s3://b/p/", "imageList", "list.txt"), "spec.data.evaluation", None, prep(), str(tmp_path / "e"))


def test_batches_stream_from_disk(tmp_path):
    st = MemStorage({"s3://b/d.npz": npz(np.zeros((10, 8, 8), np.uint8), np.arange(10))})
    tf, _ = data.load(st, ds("s3://b/d.npz"), "spec.data.evaluation", None, prep(), str(tmp_path / "e"), 10)
    sizes = [(len(x[data.IMAGE_FEED]), list(y)) for x, y in tf.batches(4)]
    assert sizes == [(4, [0, 1, 2, 3]), (4, [4, 5, 6, 7]), (2, [8, 9])]


def test_stored_samples_are_reused_only_for_the_same_request(tmp_path):
    st = MemStorage({"s3://b/d.npz": npz(np.zeros((10, 8, 8), np.uint8), np.arange(10))})
    d = str(tmp_path / "e")
    data.load(st, ds("s3://b/d.npz"), "spec.data.evaluation", 4, prep(), d, 10)
    read = st.bytes_read
    assert data.load(st, ds("s3://b/d.npz"), "spec.data.evaluation", 4, prep(), d, 10)[0].n == 4
    assert st.bytes_read == read                                    # reused
    assert data.load(st, ds("s3://b/d.npz"), "spec.data.evaluation", None, prep(), d, 10)[0].n == 10
    assert data.load(st, ds("s3://b/d.npz"), "spec.data.evaluation", None, prep(std=(0.25,)), d, 10)[0].n == 10
    assert st.bytes_read > read


def test_npz_without_labels_calibrates_but_does_not_evaluate(tmp_path):
    buf = io.BytesIO()
    np.savez(buf, images=np.zeros((6, 8, 8), np.uint8))
    st = MemStorage({"s3://b/u.npz": buf.getvalue()})
    tf, stats = data.load(st, ds("s3://b/u.npz"), "spec.data.calibration", 4, prep(), str(tmp_path / "c"), 10, labels=False)
    assert tf.n == 4 and list(tf.labels) == [data.NO_LABEL] * 4 and stats.bytes_used == 4 * 64
    with pytest.raises(BadInput) as ei:
        data.load(st, ds("s3://b/u.npz"), "spec.data.evaluation", None, prep(), str(tmp_path / "e"), 10)
    assert "has no 'labels' array" in ei.value.message and "spec.data.evaluation needs one integer label" in ei.value.message


def test_npz_labels_are_not_read_for_calibration(tmp_path):
    st = MemStorage({"s3://b/d.npz": npz(np.zeros((4, 8, 8), np.uint8), np.array([1, 2, 99, 3]))})
    tf, _ = data.load(st, ds("s3://b/d.npz"), "spec.data.calibration", None, prep(), str(tmp_path / "c"), 10,
                      labels=False)
    assert tf.n == 4 and set(tf.labels) == {data.NO_LABEL}


def test_image_list_of_bare_paths_calibrates_but_does_not_evaluate(tmp_path):
    img = png(np.zeros((8, 8), np.uint8))
    # a bare path (with spaces), a labelled line (label dropped, even out of range) and "3.png" as a name
    st = _image_list("a b.png\nc.png 99\nd 3.png\n", {"a b.png": img, "c.png": img, "d 3.png": img})
    calib = ds("s3://b/p/", "imageList", "list.txt")
    tf, _ = data.load(st, calib, "spec.data.calibration", None, prep(), str(tmp_path / "c"), 10, labels=False)
    assert tf.n == 3 and set(tf.labels) == {data.NO_LABEL}
    with pytest.raises(BadInput) as ei:
        data.load(st, calib, "spec.data.evaluation", None, prep(), str(tmp_path / "e"), 10)
    assert ei.value.reason == "BadListFile" and "list.txt line 1" in ei.value.message
    assert "spec.data.evaluation needs labels" in ei.value.message


def _prefix_storage(n: int, extra: dict[str, bytes] | None = None) -> MemStorage:
    objs = {f"s3://b/imgs/{i:03d}.png": png(np.full((8, 8), i, np.uint8)) for i in range(n)}
    return MemStorage({**objs, **(extra or {})})


def test_image_prefix_takes_the_first_images_in_key_order_and_lists_no_further(tmp_path):
    st = _prefix_storage(50, {"s3://b/imgs/README.txt": b"not an image", "s3://b/imgs-other/x.png": b"elsewhere",
                              "s3://b/imgs/sub/zz.JPG": b"beyond the first 20"})
    tf, stats = data.load(st, ds("s3://b/imgs", "imagePrefix"), "spec.data.calibration", 20, prep(),
                          str(tmp_path / "c"), 10, labels=False)
    assert tf.n == 20 and st.list_calls == 1                      # one page of 20 keys, no more
    x, y = next(tf.batches(20))
    assert np.allclose(x[data.IMAGE_FEED][:, 0, 0, 0], (np.arange(20) / 255.0 - 0.5) / 0.5, atol=1e-6)   # 000.png, 001.png, ...
    assert set(y) == {data.NO_LABEL}
    assert stats.bytes_read == sum(len(st.objects[f"s3://b/imgs/{i:03d}.png"]) for i in range(20))


def test_image_prefix_pages_past_other_objects(tmp_path):
    st = _prefix_storage(3, {f"s3://b/imgs/000-notes-{i}.txt": b"x" for i in range(5)})
    tf, _ = data.load(st, ds("s3://b/imgs/", "imagePrefix"), "spec.data.calibration", 2, prep(), str(tmp_path / "c"),
                      labels=False)
    assert tf.n == 2 and st.list_calls == 4                       # pages of 2: 4 notes, then the images


def test_image_prefix_without_images_names_the_prefix(tmp_path):
    st = MemStorage({"s3://b/imgs/list.txt": b"a.png 1\n"})
    with pytest.raises(BadInput) as ei:
        data.load(st, ds("s3://b/imgs/", "imagePrefix"), "spec.data.calibration", 5, prep(), str(tmp_path / "c"),
                  labels=False)
    assert ei.value.reason == "EmptyDataset" and "spec.data.calibration.uri s3://b/imgs/" in ei.value.message
    assert ".jpg, .jpeg, .png" in ei.value.message


def test_image_prefix_corrupt_image_names_the_object(tmp_path):
    st = _prefix_storage(2, {"s3://b/imgs/001.png": b"garbage"})
    with pytest.raises(BadInput) as ei:
        data.load(st, ds("s3://b/imgs/", "imagePrefix"), "spec.data.calibration", None, prep(), str(tmp_path / "c"),
                  labels=False)
    assert ei.value.reason == "CorruptImage" and "s3://b/imgs/001.png" in ei.value.message
