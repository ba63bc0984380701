"""Binaries hack/build-tools.sh builds from the Go module proxy at the versions pinned in
hack/versions.env, for tests that need the tool and not the devenv (chart rendering, actionlint):
the cached one under $KUBESLIM_CACHE, built first when missing."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# tool name in build-tools.sh -> (its version variable in versions.env, the binary)
TOOLS = {"helm": ("HELM_VERSION", "helm"), "actionlint": ("ACTIONLINT_VERSION", "actionlint"),
         "toxiproxy": ("TOXIPROXY_VERSION", "toxiproxy-server")}


def pinned_versions() -> dict[str, str]:
    lines = (REPO / "hack" / "versions.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.lstrip().startswith("#"))


def built_tool(tool: str) -> str:
    variable, binary = TOOLS[tool]
    cache = Path(os.environ.get("KUBESLIM_CACHE") or Path.home() / ".cache" / "kubeslim")
    path = cache / f"{tool}-{pinned_versions()[variable]}" / "bin" / binary
    if not os.access(path, os.X_OK):
        # Output to the terminal: a cold build takes a minute or two.
        proc = subprocess.run([str(REPO / "hack" / "build-tools.sh"), tool])
        if proc.returncode != 0 or not os.access(path, os.X_OK):
            raise RuntimeError(f"hack/build-tools.sh {tool} did not produce {path} (exit {proc.returncode})")
    return str(path)
