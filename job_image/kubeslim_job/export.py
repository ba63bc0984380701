"""Stage 1: produce the fp32 static model (work/fp32/model.pdmodel + model.pdiparams).

- inference: fetch the two files, check they load and run once on the input shape.
- builtin: paddle.vision.models.<architecture>(num_classes=numClasses) + a paddle.save state dict.
- custom: a Python file from S3 (or a module in the image), factory(**kwargs) + state dict.
builtin and custom are saved with paddle.jit.save: one InputSpec per spec.model.inputs entry
([None, *shape], -1 dimensions as None, its dtype and name), or [None, C, H, W] float32 named "x"
for spec.model.inputShape.

Every model is then loaded once as a static program to record what the later stages need in
work/export.json (handoff.ExportFacts): its inputs (feed names, per-sample shapes, dtypes: from the
model, checked against spec.model.inputs / inputShape where given), its outputs, the number of
classes where the first output is [N, classes] scores (what top1/top5/agreement read), op and
parameter counts. Where every input shape is fixed the model runs once on a probe batch.
"""
from __future__ import annotations

import zlib  # noqa: F401  -- must precede paddle: libpaddle bundles a zlib that clashes with the system's

import importlib
import importlib.util
import inspect
import os
import time
from collections import Counter
from typing import Any

import numpy as np
from kubeslim_api.spec import CLASSIFIER_METRICS, DYNAMIC, ModelInput, ModelSpec, QuantizationJobSpec

from . import data, inference, model_format
from .errors import BadInput, last_line
from .handoff import ExportFacts, OutputFacts
from .storage import Storage, join_uri, parse_uri
from .workdir import MODEL_FILE, PARAMS_FILE, WorkDir


def preflight(spec: QuantizationJobSpec, storage: Storage) -> None:
    """Cheap checks before any heavy work: a GPU backend the pod can have, every input object exists
    and the output bucket is there."""
    # The pod will not gain a GPU or TensorRT between its stages: fail now, not in verify after calibration.
    if spec.verification.backend in inference.GPU_REQUESTS:
        inference.pick_backend(spec.verification.backend)
    m = spec.model
    if m.inference:   # both files exist, and the model is not Paddle 3 PIR JSON (Paddle 2.6 segfaults on it)
        model_format.preflight_inference(storage, m.inference)
    for field, uri in spec.s3_uris().items():
        if field.endswith((".weights", ".code")):
            storage.size_of(uri, field)
    for name in ("calibration", "evaluation"):
        ds = getattr(spec.data, name)
        if ds.format == "npz":
            storage.size_of(ds.uri, f"spec.data.{name}.uri")
        elif ds.format == "imagePrefix":
            next(data.prefix_images(storage, ds.uri, f"spec.data.{name}.uri"))   # raises if there is none
        else:
            storage.size_of(join_uri(ds.uri, ds.list_file), f"spec.data.{name}.listFile")
    storage.check_writable_bucket(spec.output.uri, "spec.output.uri")


def run(spec: QuantizationJobSpec, storage: Storage, work: WorkDir) -> ExportFacts:
    t0 = time.perf_counter()
    preflight(spec, storage)
    import paddle

    paddle.set_device("cpu")
    source = spec.model.source
    prefix = os.path.join(work.fp32, "model")
    if source == "inference":
        inf = spec.model.inference
        storage.download(join_uri(inf.uri, inf.model_file), prefix + ".pdmodel", "spec.model.inference.uri")
        model_format.require_legacy_file(prefix + ".pdmodel", join_uri(inf.uri, inf.model_file))
        storage.download(join_uri(inf.uri, inf.params_file), prefix + ".pdiparams", "spec.model.inference.uri")
    else:
        layer, field = _build_layer(spec, storage, work)
        inputs = spec.model.inputs or data.image_inputs(spec.model.input_shape)
        specs_in = [paddle.static.InputSpec([None, *(None if d == DYNAMIC else d for d in i.shape)], i.dtype, i.name)
                    for i in inputs]
        try:
            paddle.jit.save(layer, prefix, input_spec=specs_in)
        except Exception as exc:
            operator = model_format.pir_only_operator(str(exc))
            if operator:   # Paddle 3 with PIR off: the model is fine, this Paddle cannot write it as legacy
                raise model_format.legacy_export_unsupported(operator, field, paddle.__version__) from None
            raise BadInput("ExportFailed", f"{field}: paddle.jit.save failed for inputs {describe(inputs)} "
                                           f"({last_line(exc)}); check spec.model.inputs (or inputShape) and the model's "
                                           "forward") from None
    facts = inspect_static(prefix, spec, source)
    for name in ("calibration", "evaluation"):      # an npz that misses an input fails now, not after calibration
        data.check_npz(storage, getattr(spec.data, name), f"spec.data.{name}", facts.inputs)
    if spec.model.builtin and facts.num_classes != spec.model.builtin.num_classes:
        raise BadInput("ShapeMismatch", f"spec.model.builtin.numClasses is {spec.model.builtin.num_classes} but the model "
                                        f"outputs {facts.num_classes} classes")
    facts.seconds, facts.bytes_read = round(time.perf_counter() - t0, 3), storage.bytes_read
    work.save(facts)
    return facts


def _build_layer(spec: QuantizationJobSpec, storage: Storage, work: WorkDir):
    import paddle

    m = spec.model
    if m.builtin:
        field = "spec.model.builtin"
        fn = _builtin_factory(m.builtin.architecture)
        kwargs: dict[str, Any] = {"num_classes": m.builtin.num_classes}
        params = inspect.signature(fn).parameters
        if "pretrained" in params:
            kwargs["pretrained"] = False   # never download at run time: weights come from spec
        try:
            layer = fn(**kwargs)
        except Exception as exc:
            raise BadInput("ModelBuildFailed", f"spec.model.builtin.architecture {m.builtin.architecture}: "
                                               f"{last_line(exc)}") from None
        weights = m.builtin.weights
    else:
        field = "spec.model.custom"
        c = m.custom
        if c.code:
            path = os.path.join(work.src, os.path.basename(parse_uri(c.code)[1]) or "model.py")
            storage.download(c.code, path, "spec.model.custom.code")
            where = f"spec.model.custom.code {c.code}"
            try:
                modspec = importlib.util.spec_from_file_location("kubeslim_user_model", path)
                module = importlib.util.module_from_spec(modspec)
                modspec.loader.exec_module(module)
            except Exception as exc:
                raise BadInput("CustomCodeFailed", f"{where}: importing it failed ({last_line(exc)})") from None
        else:
            where = f"spec.model.custom.module {c.module}"
            try:
                module = importlib.import_module(c.module)
            except Exception as exc:
                raise BadInput("CustomCodeFailed", f"{where}: cannot import it ({last_line(exc)}); it must be "
                                                   "installed in the job image") from None
        factory = getattr(module, c.factory, None)
        if not callable(factory):
            raise BadInput("CustomCodeFailed", f"{where}: has no callable '{c.factory}' (spec.model.custom.factory)")
        try:
            layer = factory(**c.kwargs)
        except Exception as exc:
            raise BadInput("CustomCodeFailed", f"{where}: {c.factory}(**spec.model.custom.kwargs) raised "
                                               f"{last_line(exc)}") from None
        if not isinstance(layer, paddle.nn.Layer):
            raise BadInput("CustomCodeFailed", f"{where}: {c.factory} returned {type(layer).__name__}, not a paddle.nn.Layer")
        weights = c.weights
    if weights:
        _load_weights(layer, storage, weights, f"{field}.weights", work)
    layer.eval()
    return layer, field


def _builtin_factory(arch: str):
    import paddle.vision.models as models

    names = [n for n in dir(models) if not n.startswith("_") and callable(getattr(models, n))]
    if arch in names:
        return getattr(models, arch)
    folded = {n.lower().replace("_", ""): n for n in names}
    key = arch.lower().replace("_", "")
    if key in folded:
        return getattr(models, folded[key])
    raise BadInput("UnknownArchitecture", f"spec.model.builtin.architecture {arch!r} is not in paddle.vision.models; "
                                          f"choose one of: {', '.join(sorted(n for n in names if n[0].islower()))}")


def _load_weights(layer, storage: Storage, uri: str, field: str, work: WorkDir) -> None:
    import paddle

    path = os.path.join(work.src, "weights.pdparams")
    storage.download(uri, path, field)
    try:
        state = paddle.load(path)
    except Exception as exc:
        raise BadInput("BadWeights", f"{field} {uri}: not a paddle.save state dict ({last_line(exc)})") from None
    if not isinstance(state, dict):
        raise BadInput("BadWeights", f"{field} {uri}: holds a {type(state).__name__}, expected a state dict "
                                     "(paddle.save(model.state_dict(), path))")
    own = layer.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {list(state[k].shape)} vs {list(own[k].shape)}" for k in own
             if k in state and list(np.shape(state[k])) != list(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}" + (" …" if len(missing) > 3 else ""))
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}" + (" …" if len(unexpected) > 3 else ""))
        if wrong:
            parts.append(f"shape {', '.join(wrong[:2])}")
        raise BadInput("WeightsMismatch", f"{field} {uri}: does not fit the model ({'; '.join(parts)}); check the "
                                          "architecture, numClasses or kwargs")
    layer.set_state_dict(state)


def describe(inputs: list[ModelInput]) -> str:
    return ", ".join(f"{i.name} {i.dtype} {i.shape}" for i in inputs)


def resolve_inputs(declared: list[ModelInput], model: ModelSpec, field: str) -> list[ModelInput]:
    """The model's inputs (its feeds, in its order) with what the spec fixes: spec.model.inputs by
    name (a -1 there keeps the model's dimension, a number fixes a dynamic one), or inputShape for
    the one image input. Anything that contradicts the model is BadInput naming the spec field."""
    if model.inputs is not None:
        given = {i.name: (k, i) for k, i in enumerate(model.inputs)}
        if set(given) != {d.name for d in declared}:
            raise BadInput("ShapeMismatch", f"spec.model.inputs names {', '.join(given)} but the model ({field}) has inputs "
                                            f"{describe(declared)}; list exactly these by name")
        out = []
        for d in declared:
            k, g = given[d.name]
            merged = [x if x != DYNAMIC else y for x, y in zip(g.shape, d.shape)]
            if len(g.shape) != len(d.shape) or not data.fits(tuple(merged), d.shape):
                raise BadInput("ShapeMismatch", f"spec.model.inputs[{k}].shape {g.shape} does not fit the model's input "
                                                f"{d.name} {d.shape} (per sample, -1 dynamic); fix it or leave "
                                                "spec.model.inputs out to read the inputs from the model")
            if g.dtype != d.dtype:
                raise BadInput("DtypeMismatch", f"spec.model.inputs[{k}].dtype {g.dtype} does not match the model's input "
                                                f"{d.name} ({d.dtype}); set dtype {d.dtype}")
            out.append(d.model_copy(update={"shape": merged}))
        return out
    if model.input_shape is not None:
        image = data.image_input(declared)
        shape = [int(v) for v in model.input_shape]
        if image is None or not data.fits(tuple(shape), image.shape):
            what = f"image input {image.name} {image.shape}" if image else f"inputs {describe(declared)}"
            raise BadInput("ShapeMismatch", f"spec.model.inputShape {shape} does not match the model's {what}; fix it, or "
                                            "describe the inputs by name in spec.model.inputs")
        return [i.model_copy(update={"shape": shape}) if i is image else i for i in declared]
    return declared


def _probe(inp: ModelInput) -> np.ndarray:
    """One sample for a shape check: zeros, but ones for float side inputs (a detector's
    scale_factor divides)."""
    fill = 0 if len(inp.shape) == 3 or not inp.dtype.startswith("float") else 1
    return np.full([1, *inp.shape], fill, inp.dtype)


def inspect_static(prefix: str, spec: QuantizationJobSpec, source: str) -> ExportFacts:
    """Load a static inference model once: inputs, outputs, classes, op and parameter counts."""
    import paddle
    from paddle.base.data_feeder import convert_dtype

    field = "spec.model.inference.uri" if source == "inference" else f"spec.model.{source}"
    paddle.enable_static()
    try:
        exe = paddle.static.Executor(paddle.CPUPlace())
        scope = paddle.static.Scope()
        with paddle.static.scope_guard(scope):
            try:
                program, feeds, fetches = paddle.static.load_inference_model(prefix, exe)
            except Exception as exc:
                raise BadInput("BadModel", f"{field}: {MODEL_FILE}/{PARAMS_FILE} do not load as a Paddle inference "
                                           f"model ({last_line(exc)}); export it with paddle.jit.save or "
                                           "paddle.static.save_inference_model") from None
            block = program.global_block()
            declared = [ModelInput(name=n, shape=[DYNAMIC if int(d) < 0 else int(d) for d in block.var(n).shape[1:]],
                                   dtype=convert_dtype(block.var(n).dtype)) for n in feeds]
            inputs = resolve_inputs(declared, spec.model, field)
            shapes = [[int(d) for d in v.shape] for v in fetches]
            if all(DYNAMIC not in i.shape for i in inputs):
                try:
                    outs = exe.run(program, feed={i.name: _probe(i) for i in inputs}, fetch_list=fetches,
                                   return_numpy=False)
                except Exception as exc:
                    raise BadInput("ShapeMismatch", f"{field}: the model fails on one sample of inputs {describe(inputs)} "
                                                    f"({last_line(exc)}); check spec.model.inputs (or inputShape)") from None
                shapes = [list(np.shape(np.array(o))) for o in outs]
            outputs = [OutputFacts(name=v.name, shape=shape, dtype=convert_dtype(v.dtype)) for v, shape in zip(fetches, shapes)]
            ops = Counter(op.type for block in program.blocks for op in block.ops if op.type not in ("feed", "fetch"))
            params = [v for v in program.list_vars() if v.persistable and v.name not in ("feed", "fetch")]
            n_params = 0
            for v in params:
                t = scope.find_var(v.name)
                if t is None:
                    continue
                try:
                    n_params += int(np.prod(np.array(t.get_tensor()).shape))
                except Exception:   # non-tensor persistables have no size
                    pass
    finally:
        paddle.disable_static()
    first = outputs[0]
    num_classes = first.shape[1] if len(first.shape) == 2 and first.shape[1] > 0 and first.dtype.startswith("float") else None
    metric = spec.verification.metric
    if metric in CLASSIFIER_METRICS and num_classes is None:
        raise BadInput("BadModel", f"{field}: output {first.name} has shape {first.shape}; spec.verification.metric "
                                   f"{metric} reads the first output as [N, classes] scores. For a model that is not a "
                                   "classifier use metric fidelity (every output compared with fp32's)")
    image = data.image_input(inputs)
    return ExportFacts(
        source=source,
        inputs=inputs,
        outputs=outputs,
        input_shape=list(image.shape) if image is not None else None,
        num_classes=num_classes,
        ops=int(sum(ops.values())),
        op_types=dict(ops.most_common(12)),
        params=n_params,
        size_bytes=os.path.getsize(prefix + ".pdmodel") + os.path.getsize(prefix + ".pdiparams"),
    )
