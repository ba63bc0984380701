"""What can be checked of the Dockerfile without a container engine (the images are built and run
by the devenv: devenv/images.sh, and for the GPU target make images-gpu and tests/e2e/test_gpu_image.py):
every target exists, runs as a numeric user, starts a console script that the packaging really
defines, pins the versions the packaging pins, keeps writable paths under the mounted volumes,
starts from the one Python base, and uses only what the engine's built-in frontend understands."""
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


def _chain(stage: str) -> list[str]:
    """The stage and the stages it is built FROM, nearest first."""
    stages, out = _stages(), []
    while stage in stages:
        out.append(stage)
        stage = re.match(r"(\S+)", stages[stage][0][1]).group(1)
    return out


def _instructions(target: str, instr: str) -> list[str]:
    """The arguments of every `instr` of the target and the stages it is built FROM, base first."""
    return [a for s in reversed(_chain(target)) for i, a in _stages()[s] if i == instr]


def _args(stage: str) -> dict[str, str]:
    """The ARG defaults the stage's instructions see: the global ones, then its chain's (nearest wins)."""
    out = {}
    for args in [a for i, a in _stages()[""] if i == "ARG"] + _instructions(stage, "ARG"):
        if "=" in args:
            k, v = args.split("=", 1)
            out[k] = v
    return out


def _env(target: str) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in shlex.split(" ".join(_instructions(target, "ENV"))) if "=" in kv)


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
    run = " ".join(_instructions(target, "RUN"))
    own_run = " ".join(a for i, a in _stages()[target] if i == "RUN")
    assert f"{paddle}==${{PADDLE_VERSION}}" in own_run
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


@pytest.mark.parametrize("stage", JOB_TARGETS)
def test_the_wheelhouses_hold_each_images_paddle(stage):
    # devenv/images.sh builds the offline wheelhouses: each must read its own stage's pin (the CPU and
    # GPU stages pin different Paddles), and the venv's paddle must leave pyproject's and the
    # constraints' lists.
    script = (REPO / "devenv" / "images.sh").read_text()
    func = re.search(r"^paddle_pin\(\) \{\n.*?^\}\n", script, re.S | re.M).group(0)
    out = subprocess.run(["bash", "-c", f'{func}REPO="$1"; paddle_pin "$2"', "-", str(REPO), stage],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == _args(stage)["PADDLE_VERSION"]
    assert 'f"paddlepaddle=={sys.argv[2]}"' in script and 'not r.startswith("paddlepaddle")' in script
    assert '"$(paddle_pin job-cpu)"' in script and 'echo "paddlepaddle-gpu==$(paddle_pin job)"' in script
    assert re.search(r"grep -v -E '\^\(paddleslim\|paddlepaddle\)==", script)


@pytest.mark.parametrize("target", JOB_TARGETS)
def test_job_images_turn_paddle_3_pir_off(target):
    # Paddle reads the flag at import: only the environment the process starts with sets it in
    # time for every process (kubeslim-job's CLI sets it too, for runs outside the images).
    assert _env(target).get("FLAGS_enable_pir_api") == "0", target


def test_only_the_engines_builtin_frontend_is_needed():
    # A `# syntax=` line makes BuildKit pull a frontend image, heredocs need one: neither works
    # on an engine that reaches no registry (the devenv's).
    text = (REPO / "Dockerfile").read_text()
    assert not re.search(r"^#\s*syntax=", text, re.M)
    assert "<<" not in text


def test_offline_build_args_reach_every_pip_install():
    for target in ("wheel", "operator", "job-base", "job-cpu", "job"):
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


@pytest.mark.parametrize("target", ["operator", *JOB_TARGETS])
def test_every_image_starts_from_the_one_python_base(target):
    # The GPU image too: no CUDA base image (Docker Hub's nvidia/cuda), its CUDA comes as wheels.
    assert _chain(target)[-1] == "python" and _stages()["python"][0][1].startswith("${PYTHON_IMAGE} "), _chain(target)


def _gpu_requirements() -> list[str]:
    lines = (REPO / "job_image" / "gpu-requirements.txt").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def test_the_gpu_wheels_are_pinned_cuda_11_wheels():
    # paddlepaddle-gpu 2.6.2 is built with CUDA 11.8 and cuDNN 8.6.0: a -cu12 wheel or another
    # cuDNN major would not be what it dlopens.
    reqs = _gpu_requirements()
    assert reqs and all(re.fullmatch(r"nvidia-[a-z-]+-cu11==[\d.]+", r) for r in reqs), reqs
    assert "nvidia-cudnn-cu11==8.6.0.163" in reqs


def test_ld_library_path_names_the_lib_dir_of_every_gpu_wheel():
    # NVIDIA's wheels install nvidia/<name>/lib (nvidia-cuda-nvrtc-cu11 -> nvidia/cuda_nvrtc/lib);
    # Paddle finds a library only through the loader's path, so each wheel's dir is on it, no other.
    args, env = _args("job"), _env("job")
    path = env["LD_LIBRARY_PATH"].replace("${NVIDIA_LIBS}", args["NVIDIA_LIBS"]).split(":")
    wheels = {r.split("==")[0].removeprefix("nvidia-").removesuffix("-cu11").replace("-", "_") for r in _gpu_requirements()}
    assert {f"{args['NVIDIA_LIBS']}/{w}/lib" for w in wheels} == set(path), path
    # ... under the site-packages of the base's Python.
    python = re.search(r"python:(\d+\.\d+)", args["PYTHON_IMAGE"]).group(1)
    assert args["NVIDIA_LIBS"] == f"/opt/kubeslim/lib/python{python}/site-packages/nvidia"


@pytest.mark.parametrize("target", JOB_TARGETS)
def test_job_writes_only_under_mounted_volumes(target):
    pairs = _env(target)
    for var in ("HOME", "MPLCONFIGDIR", "XDG_CACHE_HOME"):
        assert pairs[var].startswith(("/tmp/", "/work/")), (var, pairs.get(var))
    assert _instructions(target, "WORKDIR")[-1] == "/work"


def test_versions_are_pinned_bases():
    image = _args("job")["PYTHON_IMAGE"]
    assert ":" in image and not image.endswith(":latest"), image


def test_every_python_package_is_in_the_wheel():
    # The images install the wheel, not the checkout: a subpackage missing from `packages` works
    # in the editable venv and dies in the container (kubeslim_operator.handlers once did).
    packaged = set(PYPROJECT["tool"]["setuptools"]["packages"])
    for top, src in PYPROJECT["tool"]["setuptools"]["package-dir"].items():
        for init in sorted((REPO / src).rglob("__init__.py")):
            name = ".".join([top, *init.parent.relative_to(REPO / src).parts])
            assert name in packaged, f"{name} ({init.parent}) is not in [tool.setuptools] packages"


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
