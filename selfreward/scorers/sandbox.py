"""Run untrusted candidate code against its tests in a child Python, with limits; never raise on the code's behaviour.

Each run gets a throwaway working directory, a stripped environment, `python -I -B` (isolated, no bytecode
writes), a wall-clock timeout that kills the child's whole process group, and rlimits (CPU seconds, address
space, file size, open files, no core dumps). A prelude installs an audit hook before the candidate runs:
it refuses sockets, process spawning, ctypes, and any write, delete, rename or mkdir outside the working
directory. Audit hooks cannot be removed from Python code, but they are not a security boundary: native code
(a C extension already installed, a bug in the interpreter) can get past them. Run untrusted model output on a
machine or container you can afford to lose.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

# The child runs this file. Limits and the hook come first, so no candidate code runs without them.
# rlimits are set here rather than in Popen's preexec_fn: preexec_fn is unsafe when the parent has threads
# (subprocess docs), and we run several children from a thread pool. Soft = hard, so they cannot be raised.
_PRELUDE = r'''
import os, resource, sys
_token = sys.stdin.readline().strip()  # known only to the parent: a pass is only claimed by reaching the end
_cpu, _mem, _fsize = (int(v) for v in sys.argv[1:4])
for _what, _n in ((resource.RLIMIT_CPU, _cpu), (resource.RLIMIT_AS, _mem), (resource.RLIMIT_FSIZE, _fsize),
                  (resource.RLIMIT_NOFILE, 64), (resource.RLIMIT_CORE, 0)):
    resource.setrlimit(_what, (_n, _n))
_ROOT = os.path.realpath(os.getcwd())
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_PATH_EVENTS = {"os.remove": 1, "os.rmdir": 1, "os.mkdir": 1, "os.rename": 2, "os.symlink": 2, "os.link": 2,
                "os.chmod": 1, "os.chown": 1, "os.truncate": 1, "os.utime": 1, "shutil.rmtree": 1}
_DENY = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
         "pty.", "ctypes.", "os.kill", "os.killpg", "signal.pthread_kill", "sys.remote_exec")


def _inside(path):
    if isinstance(path, int):  # an already open descriptor: checked when it was opened
        return True
    try:
        real = os.path.realpath(os.fsdecode(path))
    except Exception:
        return False
    return real == _ROOT or real.startswith(_ROOT + os.sep)


def _hook(event, args):
    if event.startswith(_DENY):
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "open":
        path, mode, flags = args
        if ((mode and any(c in mode for c in "wax+")) or (flags or 0) & _WRITE) and not _inside(path):
            raise PermissionError(f"sandbox: writing {path!r} outside the working directory")
    elif event in _PATH_EVENTS and _PATH_EVENTS[event]:
        for path in args[: _PATH_EVENTS[event]]:
            if not _inside(path):
                raise PermissionError(f"sandbox: {event} on {path!r} outside the working directory")


sys.addaudithook(_hook)
_code = open("candidate.py", encoding="utf-8").read()
_tests = open("tests.py", encoding="utf-8").read()
_entry = sys.argv[4] if len(sys.argv) > 4 else ""
_ns = {"__name__": "__candidate__"}
try:
    exec(compile(_code, "candidate.py", "exec"), _ns)
    exec(compile(_tests, "tests.py", "exec"), _ns)
    if _entry:  # HumanEval style: tests define check(fn)
        _ns["check"](_ns[_entry])
except BaseException:  # SystemExit included: sys.exit(0) in the candidate must not count as a pass
    import traceback
    traceback.print_exc()
    sys.stderr.flush()
    os._exit(1)
sys.stdout.write("\n" + _token + "\n")
sys.stdout.flush()
os._exit(0)
'''

_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)


@dataclass
class Result:
    passed: bool
    status: str  # passed | failed | timeout | crashed (signal N)
    output: str  # the tail of stdout+stderr


def extract_code(text: str) -> str:
    """The code of a response: its first fenced block (```python ... ```), else the whole text."""
    m = _FENCE.search(text)
    return m.group(1) if m else text


def run_tests(code: str, tests: str, entry_point: str | None = None, timeout: float = 5.0, memory_mb: int = 1024,
              max_file_mb: int = 16) -> Result:
    """Run `code` then `tests` (asserts; or a `check(fn)` called on `entry_point`) in a sandboxed child Python.

    Passes only when the child reaches the end of the tests; a timeout, crash or exception is a failure.
    """
    token = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="selfreward-sandbox-") as tmp:
        work = Path(tmp)
        (work / "candidate.py").write_text(code, encoding="utf-8")
        (work / "tests.py").write_text(tests, encoding="utf-8")
        (work / "_prelude.py").write_text(_PRELUDE, encoding="utf-8")
        log = work / "_output.txt"
        args = [sys.executable, "-I", "-B", "_prelude.py", str(int(timeout) + 1), str(memory_mb * 2**20),
                str(max_file_mb * 2**20)] + ([entry_point] if entry_point else [])
        env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
        # output goes to a file, not a pipe: RLIMIT_FSIZE then caps a runaway print too
        with open(log, "wb") as out:
            proc = subprocess.Popen(args, cwd=tmp, env=env, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # own process group: a timeout kills all of it
            try:
                proc.communicate((token + "\n").encode(), timeout=timeout)
                status = None
            except subprocess.TimeoutExpired:
                status = "timeout"
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        with open(log, "rb") as f:  # only the tail: the output may be up to the file-size limit
            f.seek(max(0, log.stat().st_size - 4000))
            text = f.read().decode("utf-8", errors="replace")
    lines = text.rstrip("\n").splitlines()
    passed = status is None and proc.returncode == 0 and bool(lines) and lines[-1] == token
    if status is None:
        status = "passed" if passed else (f"crashed (signal {-proc.returncode})" if proc.returncode < 0 else "failed")
    return Result(passed=passed, status=status, output=text.replace(token, "").strip()[-2000:])


def run_many(jobs: list[dict], workers: int = 2, timeout: float = 5.0, memory_mb: int = 1024, progress: bool = True,
             desc: str = "verify code") -> list[Result]:
    """`run_tests` over jobs ({code, tests, entry_point}) on a small thread pool; results in job order."""

    def one(job: dict) -> Result:
        return run_tests(job["code"], job["tests"], job.get("entry_point"), timeout=timeout, memory_mb=memory_mb)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(tqdm(pool.map(one, jobs), total=len(jobs), desc=desc, disable=not progress or not jobs,
                         leave=False, dynamic_ncols=True))
