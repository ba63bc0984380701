"""A container's processes on the dev node: every process in the session its first process
started (each container runs with start_new_session=True), found through /proc."""
from __future__ import annotations

import os
import signal

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: str) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    return data[data.rfind(")") + 2:].split()


def session_pids(sid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(entry)
        # fields[0] is state (field 3); session is field 6 -> fields[3]
        if fields and int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry))
    return pids


def _memory(pid: int) -> int:
    # Proportional set size: a page shared by forked workers counts once overall, as a memory
    # cgroup charges it once. Resident set size where smaps_rollup is unavailable.
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def session_rss(sid: int) -> int:
    """Memory of the session's processes in bytes: roughly what a memory cgroup would charge."""
    return sum(_memory(pid) for pid in session_pids(sid))


def kill_session(sid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(sid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in session_pids(sid):  # also children that moved to another process group
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def start_time(pid: int) -> str | None:
    """Kernel start time of a process (field 22), to tell it from a later process with its pid."""
    fields = _stat_fields(str(pid))
    return fields[19] if fields else None


def kill_recorded(pid_file) -> bool:
    """Kill the session recorded in `pid_file` ("PID STARTTIME") if that very process still runs:
    what an earlier agent that died without cleaning up left behind."""
    try:
        pid_text, started = open(pid_file).read().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return False
    if start_time(pid) != started:
        return False
    kill_session(pid, signal.SIGKILL)
    return True
