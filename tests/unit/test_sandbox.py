"""The code sandbox, with real child processes: passes, failures, hangs, crashes, escapes and the network."""

import socket
import time
import uuid
from pathlib import Path

import pytest

from selfreward.scorers.sandbox import extract_code, run_many, run_tests

ADD = "def add(a, b):\n    return a + b\n"


def test_passing_and_failing_code():
    assert run_tests(ADD, "assert add(2, 3) == 5").passed
    bad = run_tests("def add(a, b):\n    return a - b\n", "assert add(2, 3) == 5")
    assert not bad.passed and bad.status == "failed" and "AssertionError" in bad.output
    assert not run_tests("def add(a, b) return", "assert add(1, 1) == 2").passed  # syntax error
    assert run_tests(ADD, "def check(fn):\n    assert fn(1, 2) == 3\n", entry_point="add").passed  # HumanEval style
    assert not run_tests(ADD, "def check(fn):\n    assert fn(1, 2) == 4\n", entry_point="add").passed


def test_infinite_loop_times_out_quickly():
    t = time.time()
    r = run_tests("while True:\n    pass\n", "", timeout=2.0)
    assert not r.passed and r.status == "timeout"
    assert time.time() - t < 20.0  # killed at the limit, not left running (generous: CI machines are shared)


@pytest.mark.parametrize("code, status", [
    ("import sys\nsys.exit(0)\n", "failed"),  # exit 0 before the tests ran is not a pass
    ("import os\nos._exit(0)\n", "failed"),
    ("import faulthandler\nfaulthandler._sigsegv()\n", "crashed (signal 11)"),
    ("import ctypes\nctypes.string_at(0)\n", "failed"),  # ctypes is refused before it can segfault
    ("x = bytearray(8 * 2**30)\n", "failed"),  # over the address-space limit: MemoryError
    ("while True:\n    print('x' * 100000)\n", "failed"),  # output over the file-size limit: EFBIG
])
def test_crashes_and_early_exits_fail(code, status):
    r = run_tests(code, "assert True", timeout=5.0)
    assert not r.passed and r.status == status, r


def test_writes_outside_the_working_directory_are_refused(tmp_path):
    name = f"selfreward-escape-{uuid.uuid4().hex}.txt"
    targets = [tmp_path.parent / name, Path("/tmp") / name, tmp_path / name]
    for target in targets:
        r = run_tests(f"open({str(target)!r}, 'w').write('pwned')\n", "")
        assert not r.passed and "outside the working directory" in r.output
    spawn = run_tests(f"import subprocess\nsubprocess.run(['touch', {str(targets[0])!r}])\n", "")
    assert not spawn.passed and "subprocess.Popen is not allowed" in spawn.output
    assert not any(t.exists() for t in targets)
    keep = tmp_path / "keep.txt"
    keep.write_text("mine")
    for code in (f"import os\nos.remove({str(keep)!r})\n", f"import os\nos.rename({str(keep)!r}, 'stolen.txt')\n",
                 f"import shutil\nshutil.rmtree({str(tmp_path)!r})\n"):
        assert not run_tests(code, "").passed
    assert keep.read_text() == "mine"


def test_writes_inside_the_working_directory_work_and_vanish():
    code = "import os\nos.mkdir('d')\nwith open('d/out.txt', 'w') as f:\n    f.write('ok')\ncwd = os.getcwd()\n"
    tests = "assert open('d/out.txt').read() == 'ok'\nprint(cwd)\n"
    r = run_tests(code, tests)
    assert r.passed, r.output
    assert not Path(r.output.strip()).exists()  # the throwaway directory is removed


def test_network_is_refused():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    try:
        r = run_tests(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n", "")
        assert not r.passed and "socket" in r.output
        with pytest.raises(socket.timeout):
            server.accept()  # nobody reached the listening socket
    finally:
        server.close()


def test_extract_code_and_parallel_runs_keep_order():
    assert extract_code("Here:\n```python\nx = 1\n```\nthen ```python\ny\n```") == "x = 1\n"
    assert extract_code("def f():\n    return 1") == "def f():\n    return 1"
    jobs = [{"code": ADD, "tests": f"assert add({i}, 1) == {i + 1 if i % 2 else 0}"} for i in range(6)]
    results = run_many(jobs, workers=2, progress=False)
    assert [r.passed for r in results] == [False, True, False, True, False, True]
