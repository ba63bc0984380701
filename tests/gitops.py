"""How GitOps tools read a QuantizationJob's health, asked of the tools' own code: Argo CD (its
settings manager, Lua harness and gitops-engine health, with the chart's health.lua in an argocd-cm)
and kstatus (cli-utils status.Compute, what Flux and kpt wait on). Both run as the binaries of
hack/gitops-judges, built and cached by hack/build-tools.sh; one process per binary serves the
whole test session. Used by the unit tests and by the e2e tests on live objects."""
from __future__ import annotations

import atexit
import json
import os
import re
import subprocess
import tempfile
import threading
from functools import cache
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
HEALTH_LUA = ROOT / "helm" / "kubeslim" / "files" / "argocd" / "health.lua"
HEALTH_KEY = "resource.customizations.health.kubeslim.io_QuantizationJob"


@cache
def _bin_dir() -> Path:
    """The judges' cache directory; build-tools.sh is a no-op when they are built from the current sources."""
    version = re.search(r"^ARGOCD_VERSION=(\S+)", (ROOT / "hack/versions.env").read_text(), re.M)[1]
    subprocess.run([str(ROOT / "hack/build-tools.sh"), "gitops"], check=True, stdout=subprocess.DEVNULL)
    cache = Path(os.environ.get("KUBESLIM_CACHE", Path.home() / ".cache/kubeslim"))
    return cache / f"gitops-judges-{version}" / "bin"


class _Judge:
    """A long-lived judge process: one JSON object written, one JSON verdict line read back."""

    def __init__(self, name: str, args: Callable[[], list[str]] = list):
        self._name, self._args = name, args  # args are made when the process starts
        self._proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    def __call__(self, obj: dict[str, Any]) -> dict[str, str]:
        with self._lock:
            if self._proc is None:
                self._proc = subprocess.Popen([str(_bin_dir() / self._name), *self._args()],
                                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                atexit.register(self._proc.communicate)  # EOF on stdin ends it
            assert self._proc.stdin and self._proc.stdout
            self._proc.stdin.write(json.dumps(obj) + "\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self._name} exited with {self._proc.wait()} (its stderr is above)")
        verdict = json.loads(line)
        if "error" in verdict:
            raise ValueError(f"{self._name}: {verdict['error']}")
        return verdict


def _argocd_cm() -> str:
    """An argocd-cm carrying the health check exactly as the chart ships it."""
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "argocd-cm"},
          "data": {HEALTH_KEY: HEALTH_LUA.read_text()}}
    with tempfile.NamedTemporaryFile("w", prefix="argocd-cm-", suffix=".json", delete=False) as f:
        json.dump(cm, f)
    atexit.register(os.unlink, f.name)
    return f.name


_argocd = _Judge("argocd-health", lambda: ["--argocd-cm-path", _argocd_cm()])
_kstatus = _Judge("kstatus")


def argocd_health(obj: dict[str, Any]) -> tuple[str, str]:
    """(status, message) as Argo CD computes them with our health.lua."""
    verdict = _argocd(obj)
    return verdict["status"], verdict.get("message", "")


def kstatus(obj: dict[str, Any]) -> str:
    """kstatus's verdict (InProgress, Current, Failed, Terminating, ...) for a live object."""
    return _kstatus(obj)["status"]
