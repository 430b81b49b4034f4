"""Adversarial candidates against the default sandbox (issue 16's list), each a real run through `run_tests`.

Every attack is written into a candidate whose `add` is wrong, so only a broken verifier could pass it. Each test
checks that the caller got a verdict (a failing Result, in bounded time) and looks for the side effect from outside:
the host's files, this process's own state, a listener it started, the processes left on the machine.
"""

import base64
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
import uuid
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
