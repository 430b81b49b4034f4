"""The code sandbox, with real child processes: passes, failures, hangs, crashes, writes, the network, values that
cross between the candidate's process and the tests', and the setting that chooses the boundary. Both modes where
both make sense; attacks on the default mode are in test_sandbox_attacks.py."""

import socket
import time
import uuid
from pathlib import Path

import pytest

from selfreward.scorers import sandbox
from selfreward.scorers.sandbox import SandboxUnavailable, extract_code, run_many, run_tests

ADD = "def add(a, b):\n    return a + b\n"
MODES = ["bwrap", "hooks"]


@pytest.mark.parametrize("mode", MODES)
def test_passing_and_failing_code(mode):
    assert run_tests(ADD, "assert add(2, 3) == 5", sandbox=mode).passed
    bad = run_tests("def add(a, b):\n    return a - b\n", "assert add(2, 3) == 5", sandbox=mode)
    assert not bad.passed and bad.status == "failed" and bad.output.endswith("AssertionError")
    assert not run_tests("def add(a, b) return", "assert add(1, 1) == 2", sandbox=mode).passed  # syntax error
    human_eval = "def check(fn):\n    assert fn(1, 2) == 3\n"
    assert run_tests(ADD, human_eval, entry_point="add", sandbox=mode).passed
    assert not run_tests(ADD, human_eval.replace("3", "4"), entry_point="add", sandbox=mode).passed
    assert not run_tests(ADD, human_eval, entry_point="sub", sandbox=mode).passed  # no such function


def test_infinite_loop_times_out_quickly():
    t = time.time()
    r = run_tests("while True:\n    pass\n", "", timeout=2.0)
    assert not r.passed and r.status == "timeout"
    assert time.time() - t < 20.0  # killed at the limit, not left running (generous: CI machines are shared)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("code, statuses", [
    ("import sys\nsys.exit(0)\n", {"failed"}),  # exit 0 before the tests ran is not a pass
    ("import os\nos._exit(0)\n", {"failed"}),
    ("import faulthandler\nfaulthandler._sigsegv()\n", {"crashed (signal 11)"}),
    ("import ctypes\nctypes.string_at(0)\n", {"failed", "crashed (signal 11)"}),  # hooks refuse ctypes; else a crash
    ("x = bytearray(8 * 2**30)\n", {"failed"}),  # over the address-space limit: MemoryError
    ("while True:\n    print('x' * 100000)\n", {"failed"}),  # output over the size limit
])
def test_crashes_and_early_exits_fail(mode, code, statuses):
    r = run_tests(ADD + code, "assert add(1, 2) == 3", timeout=5.0, sandbox=mode)
    assert not r.passed and r.status in statuses, r


@pytest.mark.parametrize("mode", MODES)
def test_writes_outside_the_working_directory_fail(mode, tmp_path):
    name = f"selfreward-escape-{uuid.uuid4().hex}.txt"
    targets = [tmp_path.parent / name, Path("/tmp") / name, tmp_path / name]
    for target in targets:
        r = run_tests(f"open({str(target)!r}, 'w').write('pwned')\n", "", sandbox=mode)
        if mode == "hooks":
            assert not r.passed and "outside the working directory" in r.output
        # under bwrap, /tmp is the run's own tmpfs; the other paths do not exist or are read-only
    spawn = run_tests(f"import subprocess\nsubprocess.run(['touch', {str(targets[0])!r}])\n", "", sandbox=mode)
    assert not spawn.passed
    assert not any(t.exists() for t in targets)
    keep = tmp_path / "keep.txt"
    keep.write_text("mine")
    for code in (f"import os\nos.remove({str(keep)!r})\n", f"import os\nos.rename({str(keep)!r}, 'stolen.txt')\n",
                 f"import shutil\nshutil.rmtree({str(tmp_path)!r})\n"):
        assert not run_tests(code, "", sandbox=mode).passed
    assert keep.read_text() == "mine"


@pytest.mark.parametrize("mode", MODES)
def test_writes_inside_the_working_directory_work_and_vanish(mode):
    name = f"selfreward-inside-{uuid.uuid4().hex}"
    code = (f"import os\nos.mkdir({name!r})\nwith open('{name}/out.txt', 'w') as f:\n    f.write('ok')\n"
            f"def read():\n    return open('{name}/out.txt').read(), os.path.realpath({name!r})\n")
    r = run_tests(code, "text, where = read()\nassert text == 'ok'\nprint(where)\n", sandbox=mode)
    assert r.passed, r.output
    assert not Path(r.output.strip()).exists()  # a throwaway tmpfs (bwrap) or directory (hooks), gone


@pytest.mark.parametrize("mode", MODES)
def test_network_is_refused(mode):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    try:
        r = run_tests(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n", "",
                      sandbox=mode)
        assert not r.passed
        with pytest.raises(socket.timeout):
            server.accept()  # nobody reached the listening socket
    finally:
        server.close()


def test_values_cross_as_plain_literals():
    code = ("import math\nLIMIT = 10\nclass Box:\n    pass\n"
            "def f(x):\n    print('noise on stdout')\n    return x\n"
            "def inf():\n    return [math.inf, -math.inf, math.nan]\n"
            "def box():\n    return Box()\n"
            "def boom(msg):\n    raise ValueError(msg)\n"
            "def abs(x):\n    return 0\n")  # a builtin's name: the tests keep the real one
    tests = ("import math\n"
             "assert f((1, [2, (3,)], {'a': {4}}, b'x', None, True, 1.5, 2j)) == (1, [2, (3,)], {'a': {4}}, b'x', None,"
             " True, 1.5, 2j)\n"
             "assert type(f((1,))) is tuple and f('line\\nbreak') == 'line\\nbreak' and LIMIT == 10\n"
             "a, b, c = inf()\nassert a == math.inf and b == -math.inf and math.isnan(c)\n"
             "try:\n    boom('no')\nexcept ValueError as e:\n    assert str(e) == 'no'\nelse:\n    assert False\n"
             "assert abs(-3) == 3\n")
    r = run_tests(code, tests)
    assert r.passed, r.output
    unplain = run_tests(code, "box()\n")
    assert not unplain.passed and "result of box() is not a plain value (Box)" in unplain.output
    caught = run_tests(code, "try:\n    box()\nexcept Exception:\n    pass\n")  # cannot be swallowed
    assert not caught.passed


def test_environment_values_are_scrubbed_from_the_output(monkeypatch):
    secret = f"tok-{uuid.uuid4().hex}"
    monkeypatch.setenv("SELFREWARD_TEST_TOKEN", secret)
    r = run_tests(f"print({secret!r})\n", f"print({secret!r})\nassert False\n")
    assert not r.passed and secret not in r.output and "[redacted]" in r.output


def test_a_missing_bwrap_stops_with_the_setting_to_change(monkeypatch):
    monkeypatch.setenv("SELFREWARD_BWRAP", "/nonexistent/bwrap")
    with pytest.raises(SandboxUnavailable, match="judge.verifier.sandbox=hooks"):
        run_tests(ADD, "assert add(1, 1) == 2", sandbox="bwrap")
    with pytest.raises(SandboxUnavailable, match="judge.verifier.sandbox=hooks"):
        run_many([{"code": ADD, "tests": ""}], progress=False)  # auto means bwrap
    assert run_tests(ADD, "assert add(1, 1) == 2", sandbox="hooks").passed
    monkeypatch.delenv("SELFREWARD_BWRAP")
    assert sandbox.resolve("auto") == "bwrap"


def test_extract_code_and_parallel_runs_keep_order():
    assert extract_code("Here:\n```python\nx = 1\n```\nthen ```python\ny\n```") == "x = 1\n"
    assert extract_code("def f():\n    return 1") == "def f():\n    return 1"
    jobs = [{"code": ADD, "tests": f"assert add({i}, 1) == {i + 1 if i % 2 else 0}"} for i in range(6)]
    results = run_many(jobs, workers=2, progress=False)
    assert [r.passed for r in results] == [False, True, False, True, False, True]
