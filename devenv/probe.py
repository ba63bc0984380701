#!/usr/bin/env python3
"""Wait until each devenv endpoint answers, and record when it first did.

    probe.py --timeout 180 --since EPOCH --out timings.json NAME=URL [NAME=URL ...]

A component counts as ready when its URL returns HTTP 200 (health endpoints), or, for URLs
marked with a leading '~' (the S3 server, whose root needs a signature), any HTTP answer at all.
TLS is not verified: these are loopback endpoints with the devenv's self-signed certificates,
probed for liveness only. Exit status 1 names the components that never became ready.
Standard library only, so it runs before the venv exists.
"""
import argparse
import json
import ssl
import sys
import time
import urllib.error
import urllib.request

_TLS = ssl.create_default_context()
_TLS.check_hostname = False
_TLS.verify_mode = ssl.CERT_NONE


def answers(url: str) -> bool:
    any_answer = url.startswith("~")
    url = url.lstrip("~")
    try:
        with urllib.request.urlopen(url, timeout=2, context=_TLS) as resp:
            return resp.status == 200
    except urllib.error.HTTPError:
        return any_answer
    except (OSError, ValueError):
        return False


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--timeout", type=float, default=180)
    ap.add_argument("--since", type=float, default=time.time(), help="epoch seconds timings are relative to")
    ap.add_argument("--out", help="write {name: seconds-until-ready} JSON here")
    ap.add_argument("targets", nargs="+", metavar="NAME=URL")
    args = ap.parse_args()

    pending = dict(t.split("=", 1) for t in args.targets)
    ready: dict[str, float] = {}
    deadline = time.time() + args.timeout
    while pending and time.time() < deadline:
        for name, url in list(pending.items()):
            if answers(url):
                ready[name] = round(time.time() - args.since, 2)
                del pending[name]
                print(f"[devenv] {name} ready after {ready[name]}s", file=sys.stderr, flush=True)
        if pending:
            time.sleep(0.2)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(ready, fh, indent=2, sort_keys=True)
    if pending:
        print(f"[devenv] not ready after {args.timeout:.0f}s: {', '.join(sorted(pending))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
