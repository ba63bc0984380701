"""kubeslim_dev.devenv's commands, the contract's side that tests call (devenv/README.md), run
against stand-in scripts: what runs in which order, what a failure says, and that the node outage
holds the image-build lock and always starts the node again."""
from __future__ import annotations

import fcntl
import stat
from pathlib import Path

import pytest

from kubeslim_dev import devenv

pytestmark = pytest.mark.unit


@pytest.fixture
def scripts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """devenv/ stand-ins: each script logs its name and arguments; FAIL_<script>_<arg> makes that
    call print something and exit 3."""
    log = tmp_path / "calls"
    for name in ("devenv.sh", "node.sh", "images.sh", "kueue.sh"):
        script = tmp_path / name
        script.write_text(f"""#!/bin/sh
echo "{name} $*" >>"{log}"
if [ -e "{tmp_path}/FAIL_{name}_$1" ]; then echo "{name} $1: it broke"; exit 3; fi
""")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(devenv, "SCRIPTS", tmp_path)
    return tmp_path


def calls(scripts: Path) -> list[str]:
    path = scripts / "calls"
    return path.read_text().splitlines() if path.exists() else []


def image_lock_is_free(devenv_dir: Path) -> bool:
    with open(devenv_dir / "images.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def test_node_outage_stops_then_starts_around_the_block_holding_the_image_lock(scripts, tmp_path):
    with devenv.node_daemons_stopped(tmp_path) as t_stop:
        assert calls(scripts) == ["node.sh stop-daemons"]
        assert not image_lock_is_free(tmp_path)
    assert t_stop > 0
    assert calls(scripts) == ["node.sh stop-daemons", "node.sh start-daemons"]
    assert image_lock_is_free(tmp_path)


def test_node_outage_starts_the_node_again_when_the_block_fails(scripts, tmp_path):
    with pytest.raises(ZeroDivisionError):
        with devenv.node_daemons_stopped(tmp_path):
            1 / 0
    assert calls(scripts) == ["node.sh stop-daemons", "node.sh start-daemons"]


def test_node_outage_whose_stop_fails_says_so_and_still_starts_the_node(scripts, tmp_path):
    (scripts / "FAIL_node.sh_stop-daemons").touch()
    with pytest.raises(devenv.DevenvCommandFailed, match=r"devenv/node.sh stop-daemons failed \(exit 3\): node.sh stop-daemons: it broke"):
        with devenv.node_daemons_stopped(tmp_path):
            pytest.fail("the block ran without a stopped node")
    assert calls(scripts) == ["node.sh stop-daemons", "node.sh start-daemons"]


@pytest.mark.parametrize("call, expected", [
    (lambda: devenv.outage("restart", "kube-apiserver"), "devenv.sh restart kube-apiserver"),
    (lambda: devenv.outage("stop", "s3"), "devenv.sh stop s3"),
    (devenv.push_images, "images.sh "),
    (lambda: devenv.run_kueue("up"), "kueue.sh up"),
    (lambda: devenv.run_kueue("down"), "kueue.sh down"),
])
def test_each_command_runs_its_script(scripts, call, expected):
    call()
    assert calls(scripts) == [expected]


@pytest.mark.parametrize("fail, call", [
    ("devenv.sh_restart", lambda: devenv.outage("restart", "kube-apiserver")),
    ("images.sh_", devenv.push_images),
    ("kueue.sh_up", lambda: devenv.run_kueue("up")),
])
def test_a_failing_command_raises(scripts, fail, call):
    (scripts / f"FAIL_{fail}").touch()
    with pytest.raises(devenv.DevenvCommandFailed, match="failed \\(exit 3\\)"):
        call()


def test_status_answers_with_its_exit_code_instead_of_raising(scripts):
    assert devenv.is_up()
    (scripts / "FAIL_devenv.sh_status").touch()
    assert not devenv.is_up()
    assert "devenv.sh status: it broke" in devenv.status().stdout
    (scripts / "FAIL_kueue.sh_status").touch()
    assert devenv.run_kueue("status").returncode == 3
