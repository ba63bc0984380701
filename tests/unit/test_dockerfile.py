"""What can be checked of the Dockerfile without a container engine (the GPU target cannot be built
here; the CPU targets are built and run by the devenv, hack/images.sh): every target exists, runs
as a numeric user, starts a console script that the packaging really defines, pins the versions
the packaging pins, keeps writable paths under the mounted volumes, and uses only what the
engine's built-in frontend understands."""
from __future__ import annotations

import ast
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _stages() -> dict[str, list[tuple[str, str]]]:
    """{stage name: [(INSTRUCTION, args)]}, line continuations and heredocs folded."""
    text = (REPO / "Dockerfile").read_text()
    text = re.sub(r"<<'?EOF'?\n.*?\nEOF\n", "\n", text, flags=re.S)
    text = text.replace("\\\n", " ")
    stages: dict[str, list[tuple[str, str]]] = {"": []}
    current = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, args = line.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", args, re.I)
            current = m.group(2) or m.group(1)
            stages[current] = []
        stages[current].append((instr, args.strip()))
    return stages


def _args(stage: str) -> dict[str, str]:
    out = {}
    for instr, args in _stages()[stage] + _stages()[""]:
        if instr == "ARG" and "=" in args:
            k, v = args.split("=", 1)
            out[k] = v
    return out


PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _pin(reqs: list[str], name: str) -> str:
    for r in reqs:
        m = re.fullmatch(rf"{re.escape(name)}==([\w.]+)", r.replace(" ", ""))
        if m:
            return m.group(1)
    raise AssertionError(f"{name} is not pinned with == in {reqs}")


JOB_TARGETS = ["job", "job-cpu"]


@pytest.mark.parametrize("target", ["operator", *JOB_TARGETS])
def test_target_exists_and_user_is_numeric(target):
    stages = _stages()
    assert target in stages
    users = [a for i, a in stages[target] if i == "USER"]
    assert users, f"{target}: no USER"
    assert re.fullmatch(r"[1-9][0-9]*(:[0-9]+)?", users[-1]), f"{target}: USER {users[-1]} is not numeric non-root"


@pytest.mark.parametrize("target, script", [("operator", "kubeslim-operator"), ("job", "kubeslim-job"), ("job-cpu", "kubeslim-job")])
def test_entrypoint_is_a_packaged_console_script(target, script):
    entry = [a for i, a in _stages()[target] if i == "ENTRYPOINT"][-1]
    argv = ast.literal_eval(entry)          # exec form: signals reach the process
    assert argv[0] == script
    target_ref = PYPROJECT["project"]["scripts"][script]
    module, func = target_ref.split(":")
    pkg, _, rest = module.partition(".")
    pkg_dir = REPO / PYPROJECT["tool"]["setuptools"]["package-dir"][pkg]
    path = pkg_dir / (rest.replace(".", "/") + ".py")
    assert path.is_file(), f"{script} -> {target_ref}: {path} is missing"
    tree = ast.parse(path.read_text())
    assert any(isinstance(n, ast.FunctionDef) and n.name == func for n in tree.body), f"{path} has no {func}()"


@pytest.mark.parametrize("target, paddle", [("job", "paddlepaddle-gpu"), ("job-cpu", "paddlepaddle")])
def test_paddle_pins_match_the_packaging(target, paddle):
    args = _args(target)
    makefile = (REPO / "Makefile").read_text()
    assert f"paddleslim=={args['PADDLESLIM_VERSION']}" in makefile
    run = " ".join(a for i, a in _stages()[target] if i == "RUN")
    assert f"{paddle}==${{PADDLE_VERSION}}" in run
    assert "--no-deps paddleslim==${PADDLESLIM_VERSION}" in run
    # the other paddle build must not sneak in through the job extra
    assert "[job]" not in run
    other = "paddlepaddle==" if target == "job" else "paddlepaddle-gpu"
    assert other not in run


def test_the_gpu_image_runs_the_paddle_of_the_dev_venv():
    # PyPI has no paddlepaddle-gpu 3.x: the GPU image stays on the job extra's 2.6.2, the Paddle
    # `make venv` installs and every non-image test runs.
    job_extra = PYPROJECT["project"]["optional-dependencies"]["job"]
    assert _args("job")["PADDLE_VERSION"] == _pin(job_extra, "paddlepaddle") == "2.6.2"


def test_the_cpu_image_runs_paddle_3_3():
    assert re.fullmatch(r"3\.3\.\d+", _args("job-cpu")["PADDLE_VERSION"]), _args("job-cpu")["PADDLE_VERSION"]


def test_the_wheelhouse_holds_the_cpu_images_paddle():
    # hack/images.sh builds the offline wheelhouse: it must read job-cpu's own pin (the GPU stage
    # has another), and drop the venv's paddle from pyproject and from its constraints.
    script = (REPO / "hack" / "images.sh").read_text()
    body = re.search(r"^job_cpu_paddle_pin\(\) \{\n(.*?)^\}", script, re.S | re.M).group(1)
    sed = re.search(r"sed -n '([^']+)'", body).group(1)
    out = subprocess.run(["sed", "-n", sed, str(REPO / "Dockerfile")], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == _args("job-cpu")["PADDLE_VERSION"]
    assert 'f"paddlepaddle=={sys.argv[2]}"' in script and 'not r.startswith("paddlepaddle")' in script
    assert re.search(r"grep -v -E '\^\(paddleslim\|paddlepaddle\)==", script)


@pytest.mark.parametrize("target", JOB_TARGETS)
def test_job_images_turn_paddle_3_pir_off(target):
    # Paddle reads the flag at import: only the environment the process starts with sets it in
    # time for every process (kubeslim-job's CLI sets it too, for runs outside the images).
    env = " ".join(a for i, a in _stages()[target] if i == "ENV")
    pairs = dict(kv.split("=", 1) for kv in shlex.split(env) if "=" in kv)
    assert pairs.get("FLAGS_enable_pir_api") == "0", target


def test_only_the_engines_builtin_frontend_is_needed():
    # A `# syntax=` line makes BuildKit pull a frontend image, heredocs need one: neither works
    # on an engine that reaches no registry (the devenv's).
    text = (REPO / "Dockerfile").read_text()
    assert not re.search(r"^#\s*syntax=", text, re.M)
    assert "<<" not in text


def test_offline_build_args_reach_every_pip_install_of_the_cpu_targets():
    for target in ("wheel", "operator", "job-cpu"):
        stage = _stages()[target]
        assert ("ARG", "PIP_OFFLINE=") in stage, target
        for instr, args in stage:
            if instr == "RUN" and "pip install" in args:
                for cmd in re.findall(r"pip install [^&]*", args):
                    # Wheels of our own (/wheels) need no index; everything else may need one.
                    assert "${PIP_OFFLINE:+--no-index}" in cmd or "/wheels/kubeslim-" in cmd, (target, cmd)


def test_python_version_matches_requires_python():
    spec = PYPROJECT["project"]["requires-python"]
    minimum = tuple(int(x) for x in re.search(r">=\s*([\d.]+)", spec).group(1).split("."))
    base = _args("operator")["PYTHON_IMAGE"]
    assert tuple(int(x) for x in re.search(r"python:(\d+\.\d+)", base).group(1).split(".")) >= minimum
    job_run = " ".join(a for i, a in _stages()["job"] if i == "RUN")
    ver = re.search(r"python(\d+\.\d+) -m venv", job_run).group(1)
    assert tuple(int(x) for x in ver.split(".")) >= minimum


@pytest.mark.parametrize("target", JOB_TARGETS)
def test_job_writes_only_under_mounted_volumes(target):
    env = " ".join(a for i, a in _stages()[target] if i == "ENV")
    pairs = dict(kv.split("=", 1) for kv in shlex.split(env) if "=" in kv)
    for var in ("HOME", "MPLCONFIGDIR", "XDG_CACHE_HOME"):
        assert pairs[var].startswith(("/tmp/", "/work/")), (var, pairs.get(var))
    assert [a for i, a in _stages()[target] if i == "WORKDIR"][-1] == "/work"


def test_versions_are_pinned_bases():
    for name in ("PYTHON_IMAGE", "CUDA_IMAGE"):
        image = _args("job")[name]
        assert ":" in image and not image.endswith(":latest"), image


def test_every_python_package_is_in_the_wheel():
    # The images install the wheel, not the checkout: a subpackage missing from `packages` works
    # in the editable venv and dies in the container (kubeslim_operator.handlers once did).
    packaged = set(PYPROJECT["tool"]["setuptools"]["packages"])
    for top, src in PYPROJECT["tool"]["setuptools"]["package-dir"].items():
        for init in sorted((REPO / src).rglob("__init__.py")):
            name = ".".join([top, *init.parent.relative_to(REPO / src).parts])
            assert name in packaged, f"{name} ({init.parent}) is not in [tool.setuptools] packages"


def _chain(stage: str) -> list[str]:
    """The stage and the stages it is built FROM, nearest first."""
    stages, out = _stages(), []
    while stage in stages:
        out.append(stage)
        stage = re.match(r"(\S+)", stages[stage][0][1]).group(1)
    return out


@pytest.mark.parametrize("target", ["operator", *JOB_TARGETS])
def test_the_numeric_user_has_a_passwd_entry(target):
    # Without one getpass.getuser() raises KeyError, and kopf calls it for its identity.
    uid, _, gid = [a for i, a in _stages()[target] if i == "USER"][-1].partition(":")
    runs = " ".join(a for s in _chain(target) for i, a in _stages()[s] if i == "RUN")
    assert re.search(rf"[a-z]+:x:{uid}:{gid or uid}:[^']*' >>/etc/passwd", runs), target


def test_the_wheel_stage_sees_every_package_dir():
    # A source folder the wheel stage does not COPY (or .dockerignore hides) builds a wheel
    # without that package, and the image dies at its first import.
    copied = {a.split()[0].rstrip("/") for i, a in _stages()["wheel"] if i == "COPY"}
    unignored = {ln[1:].rstrip("/") for ln in (REPO / ".dockerignore").read_text().splitlines() if ln.startswith("!")}
    for src in PYPROJECT["tool"]["setuptools"]["package-dir"].values():
        top = src.split("/")[0]
        assert top in copied, f"the Dockerfile's wheel stage does not COPY {top}/"
        assert top in unignored, f".dockerignore has no !{top}/ line"
