"""A plain Paddle Inference timing of an fp32 model and its quant_post_static int8 model: the
reference bench_pipeline.py holds kubeslim's reported speedup against.

The recipe users copy from Paddle's docs: Config(model, params), enable_mkldnn(), the thread count,
and for the int8 model enable_mkldnn_int8(); everything else left at Paddle's defaults
(kubeslim_dev.plain_paddle, which the tests check the job's outputs with too). Deliberately
independent of kubeslim_job (it must not share a mistake with the code it checks).

    python bench/plain_inference.py --fp32 DIR --int8 DIR --shape 3 224 224 --batch 16 --threads 2
    python bench/plain_inference.py --fp32 DIR --int8 DIR --data evaluation.npz --batch 8 --threads 2

--shape feeds the model's only input a random float32 batch; --data feeds every input by name from
an npz keyed by input name (first axis = samples; its first --batch samples, in their own dtype:
int64 token ids, a detector's image + scale_factor). Prints one JSON object: p50 milliseconds per
batch for each model and their ratio.
"""
from __future__ import annotations

import zlib  # noqa: F401  -- before paddle: libpaddle bundles a clashing zlib

import argparse
import json
import time

import numpy as np
from kubeslim_dev import plain_paddle


def p50_ms(model_dir: str, int8: bool, batch: dict[str, np.ndarray] | np.ndarray, threads: int, seconds: float,
           min_runs: int) -> float:
    pred = plain_paddle.predictor(model_dir, int8, threads)
    names = pred.get_input_names()
    if not isinstance(batch, dict):
        batch = {names[0]: batch}
    missing = [n for n in names if n not in batch]
    if missing:
        raise SystemExit(f"{model_dir}: the data has no array for input {', '.join(missing)} (it has {', '.join(batch)})")
    feed = plain_paddle.feeder(pred)
    outputs = [pred.get_output_handle(n) for n in pred.get_output_names()]

    def run() -> None:
        feed(batch)
        pred.run()
        for out in outputs:
            out.copy_to_cpu()

    for _ in range(3):
        run()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        run()
        times.append((time.perf_counter() - t) * 1000.0)
    return float(np.percentile(times, 50))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fp32", required=True, help="directory with model.pdmodel + model.pdiparams (fp32)")
    ap.add_argument("--int8", required=True, help="the same for the quant_post_static output")
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--shape", type=int, nargs=3, metavar=("C", "H", "W"), help="one float32 image input")
    source.add_argument("--data", help="an npz keyed by input name, first axis = samples")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=3.0, help="timing budget per model")
    ap.add_argument("--min-runs", type=int, default=10)
    args = ap.parse_args()
    if args.data:
        with np.load(args.data) as npz:
            x = {name: np.ascontiguousarray(npz[name][:args.batch]) for name in npz.files}
    else:
        x = np.random.default_rng(0).standard_normal((args.batch, *args.shape)).astype(np.float32)
    fp32 = p50_ms(args.fp32, False, x, args.threads, args.seconds, args.min_runs)
    int8 = p50_ms(args.int8, True, x, args.threads, args.seconds, args.min_runs)
    print(json.dumps({"batch": args.batch, "threads": args.threads, "fp32LatencyMs": round(fp32, 3),
                      "int8LatencyMs": round(int8, 3), "speedup": round(fp32 / int8, 3)}))


if __name__ == "__main__":
    main()
