"""How GitOps tools read a QuantizationJob's health: Argo CD through our Lua check (run by a real
Lua interpreter) and kstatus (Flux, kpt, cli-utils) by its documented rules
(shared/notes/k8s-facts.md). Used by the unit tests and by the e2e tests on live objects."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HEALTH_LUA = ROOT / "helm" / "kubeslim" / "files" / "argocd" / "health.lua"


def lua_interpreter() -> str:
    for name in ("lua5.4", "lua5.3", "lua"):
        if path := shutil.which(name):
            return path
    raise RuntimeError("no Lua interpreter: apt-get install lua5.4 (.ci/run installs it)")


def _lua_literal(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid Lua escapes for this data
    if isinstance(value, list):
        return "{" + ", ".join(_lua_literal(v) for v in value) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{json.dumps(str(k))}] = {_lua_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def argocd_health(obj: dict[str, Any]) -> tuple[str, str]:
    """(status, message) as Argo CD would compute them with our health.lua."""
    script = (
        f"obj = {_lua_literal(obj)}\n"
        f"local hs = (function() {HEALTH_LUA.read_text()} end)()\n"
        "io.write(hs.status, '\\n', hs.message or '')\n"
    )
    out = subprocess.run([lua_interpreter(), "-"], input=script, capture_output=True, text=True, check=True).stdout
    status, _, message = out.partition("\n")
    return status, message


def kstatus(obj: dict[str, Any]) -> str:
    """The verdict of kstatus's generic reader (cli-utils pkg/kstatus/status) for a custom resource."""
    meta, status = obj.get("metadata", {}), obj.get("status") or {}
    if meta.get("deletionTimestamp"):
        return "Terminating"
    if "generation" in meta and status.get("observedGeneration") != meta["generation"]:
        return "InProgress"
    conditions = {c["type"]: c for c in status.get("conditions", [])}
    if conditions.get("Reconciling", {}).get("status") == "True":
        return "InProgress"
    if conditions.get("Stalled", {}).get("status") == "True":
        return "Failed"
    # kstatus's generic reader does not consult Ready: an unfinished run must say Reconciling=True.
    return "Current"
