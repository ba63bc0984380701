"""Seed the devenv's S3 with the demo's model and data (idempotent: existing objects are kept).

Trains the small CNN of examples/digits.yaml on scikit-learn's bundled handwritten digits (real
images, 10 classes) for a few seconds, then uploads its code and weights, a calibration set (npz)
and a held-out evaluation set (PNG files + val_list.txt). S3 settings come from the standard AWS
environment variables (`source .devenv/env`)."""
from __future__ import annotations

import zlib  # noqa: F401  -- before paddle: libpaddle's bundled zlib clashes otherwise

import argparse
import sys

import boto3
from botocore.config import Config

from kubeslim_dev.demo import seed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bucket", default="kubeslim-demo")
    ap.add_argument("--prefix", default="digits")
    args = ap.parse_args()
    seed(boto3.client("s3", config=Config(s3={"addressing_style": "path"})), args.bucket, args.prefix)
    return 0


if __name__ == "__main__":
    sys.exit(main())
