"""Restarts the devenv's control-plane processes when they exit, the way a real node's kubelet
restarts static pods: kube-controller-manager and kube-scheduler exit by design when they lose
their leader lease (for example across a kube-apiserver restart), and kwokctl never starts them
again.

Each process is learned once, while it runs (argv, environment, working directory and the file
its output goes to, all from /proc), and started again the same way when its pid is gone, with a
crash-loop backoff (1 s doubling to 10 s, reset after 30 s of uptime). A hold file
(<hold-dir>/<name>) keeps one stopped on purpose: `devenv/devenv.sh stop|start|restart <name>`.

  usage: supervise.py --hold-dir DIR --log FILE NAME=PIDFILE [NAME=PIDFILE ...]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

POLL_SECONDS = 0.5
BACKOFF_START, BACKOFF_MAX, HEALTHY_UPTIME = 1.0, 10.0, 30.0


@dataclass
class Recipe:
    argv: list[str]
    env: dict[str, str]
    cwd: str
    output: str          # the file stdout and stderr went to


@dataclass
class Supervised:
    name: str
    pidfile: Path
    recipe: Recipe | None = None
    started_at: float = 0.0
    backoff: float = BACKOFF_START
    next_start: float = 0.0


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def alive(pid: int | None, argv0: str | None = None) -> bool:
    if pid is None:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    if state == "Z":
        return False
    return argv0 is None or cmdline.split(b"\0", 1)[0].decode() == argv0


def learn(pid: int) -> Recipe | None:
    try:
        argv = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]]
        env_items = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        cwd = os.readlink(f"/proc/{pid}/cwd")
        output = os.readlink(f"/proc/{pid}/fd/2")
    except OSError:
        return None
    env = dict(item.decode().split("=", 1) for item in env_items if b"=" in item)
    return Recipe(argv, env, cwd, output if output.startswith("/") else os.devnull)


def start(recipe: Recipe) -> int:
    with open(recipe.output, "ab") as out:
        proc = subprocess.Popen(recipe.argv, env=recipe.env, cwd=recipe.cwd, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=out, start_new_session=True, close_fds=True)
    return proc.pid


def log(logfile, message: str) -> None:
    logfile.write(f"{time.strftime('%H:%M:%S')} {message}\n")
    logfile.flush()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hold-dir", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("components", nargs="+", metavar="NAME=PIDFILE")
    args = parser.parse_args()
    args.hold_dir.mkdir(parents=True, exist_ok=True)
    supervised = [Supervised(name, Path(pidfile)) for name, pidfile in (c.split("=", 1) for c in args.components)]
    with open(args.log, "a") as logfile:
        log(logfile, f"supervising {', '.join(s.name for s in supervised)}")
        while True:
            now = time.monotonic()
            for s in supervised:
                pid = read_pid(s.pidfile)
                argv0 = s.recipe.argv[0] if s.recipe else None
                if alive(pid, argv0):
                    if s.recipe is None:
                        s.recipe = learn(pid)
                        s.started_at = now
                    elif now - s.started_at > HEALTHY_UPTIME:
                        s.backoff = BACKOFF_START
                    continue
                if s.recipe is None or (args.hold_dir / s.name).exists() or now < s.next_start:
                    continue
                # Reaps our own children that exited; others' are reaped by init.
                try:
                    while os.waitpid(-1, os.WNOHANG)[0] > 0:
                        pass
                except ChildProcessError:
                    pass
                new_pid = start(s.recipe)
                s.pidfile.write_text(f"{new_pid}\n")
                s.started_at, s.next_start = now, now + s.backoff
                log(logfile, f"{s.name} (pid {pid}) had exited: started again as pid {new_pid}; next restart no sooner than {s.backoff:.0f}s")
                s.backoff = min(s.backoff * 2, BACKOFF_MAX)
            time.sleep(POLL_SECONDS)


if __name__ == "__main__":
    sys.exit(main())
