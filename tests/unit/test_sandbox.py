"""The code sandbox, with real child processes: passes, failures, hangs, crashes, writes, the network, values that
cross between the candidate's process and the tests', and the setting that chooses the boundary. Both modes where
both make sense; attacks on the default mode are in test_sandbox_attacks.py."""

import os
import socket
import time
import uuid
from pathlib import Path

import pytest

from selfreward.scorers import sandbox
from selfreward.scorers.sandbox import SandboxUnavailable, extract_code, printable, run_many, run_tests

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
            "def abs(x):\n    return 0\n")  # a builtin's name: the tests call the candidate's, as plain exec would
    tests = ("import math\n"
             "assert f((1, [2, (3,)], {'a': {4}}, b'x', None, True, 1.5, 2j)) == (1, [2, (3,)], {'a': {4}}, b'x', None,"
             " True, 1.5, 2j)\n"
             "assert type(f((1,))) is tuple and f('line\\nbreak') == 'line\\nbreak' and LIMIT == 10\n"
             "a, b, c = inf()\nassert a == math.inf and b == -math.inf and math.isnan(c)\n"
             "try:\n    boom('no')\nexcept ValueError as e:\n    assert str(e) == 'no'\nelse:\n    assert False\n"
             "assert abs(-3) == 0\n")
    r = run_tests(code, tests)
    assert r.passed, r.output
    unplain = run_tests(code, "box()\n")
    assert not unplain.passed and "result of box() is not a plain value (Box)" in unplain.output
    caught = run_tests(code, "try:\n    box()\nexcept Exception:\n    pass\n")  # cannot be swallowed
    assert not caught.passed


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name, good, bad, tests", [
    ("max", "return a if a > b else b", "return a", "assert max(1, 2) == 2 and max(3, 1) == 3"),
    ("sorted", "return list(reversed(xs))", "return xs", "assert sorted([3, 2, 1]) == [1, 2, 3]"),
    ("sum", "return xs[0] * xs[1]", "return xs[0] + xs[1]", "assert sum([2, 3]) == 6"),
    ("round", "return int(x)", "return int(x + 0.5)", "assert round(2.7) == 2"),
])
def test_a_function_named_like_a_builtin_is_the_candidates(mode, name, good, bad, tests):
    """Plain exec of code + tests calls the candidate's `max`, not the builtin: so do the tests here."""
    arg = "x" if name == "round" else "xs" if name in ("sorted", "sum") else "a, b"
    assert run_tests(f"def {name}({arg}):\n    {good}\n", tests, sandbox=mode).passed
    assert not run_tests(f"def {name}({arg}):\n    {bad}\n", tests, sandbox=mode).passed
    # the tests' own definitions and imports still take their names back
    own = f"def {name}(*args):\n    return 'mine'\nassert {name}(1) == 'mine'\n"
    assert run_tests(f"def {name}({arg}):\n    {bad}\n", own, sandbox=mode).passed


PROMPT = 'def helper(x):\n    return x + 1\n\n\ndef f(x):\n    """helper(x), doubled."""\n'
CHECK = "def check(candidate):\n    assert candidate(1) == 2 * helper(1)\n"


@pytest.mark.parametrize("mode", MODES)
def test_the_prompts_helpers_stay_the_prompts(mode):
    """A completion that redefines a helper the prompt defines and the tests call (HumanEval's poly, encode_cyclic)
    cannot change what the tests compute: the row's prefix runs in the tests process."""
    right = PROMPT + "    return 2 * helper(x)\n"
    hack = PROMPT + "    return 0\n\n\ndef helper(x):\n    return 0\n"
    assert run_tests(right, CHECK, "f", sandbox=mode, prefix=PROMPT).passed
    assert not run_tests(hack, CHECK, "f", sandbox=mode, prefix=PROMPT).passed
    assert run_tests(hack, CHECK, "f", sandbox=mode).passed  # without the prefix, the hole this closes
    # assert-style rows: the function the prompt leaves unfinished is the candidate's, its helpers the prompt's
    asserts = "assert f(1) == 2 * helper(1)\n"
    assert run_tests(right, asserts, sandbox=mode, prefix=PROMPT).passed
    assert not run_tests(hack, asserts, sandbox=mode, prefix=PROMPT).passed
    # a prefix that stops mid-statement does not run on its own: the tests then see the candidate's names
    assert run_tests("def g(x):\n    return x\n", "assert g(3) == 3", sandbox=mode, prefix="def g(x):\n").passed


def test_untrusted_text_is_escaped_for_terminals():
    text = "ok\x1b[2J\x1b]52;c;cHduZWQ=\x07 caf\u00e9 \u202egnp.exe\r\nnext"
    shown = printable(text)
    assert shown.isprintable() and "\x1b" not in shown and "\x07" not in shown and "\u202e" not in shown
    assert shown == "ok\\x1b[2J\\x1b]52;c;cHduZWQ=\\x07 caf\u00e9 \\u202egnp.exe\\r\\nnext"
    r = run_tests(f"raise ValueError({text!r})\n", "")
    assert not r.passed and "\x1b[2J" in r.output  # the Result keeps the data; only what is printed is escaped


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


@pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox makes a user namespace of its own only for a root caller")
def test_a_root_caller_without_its_user_namespace_is_refused_and_told_how(monkeypatch):
    caches = (sandbox._root_userns, sandbox._bwrap_args, sandbox._probe)
    for cache in caches:
        cache.cache_clear()
    monkeypatch.setattr(sandbox, "_UNSHARE", "import sys\nsys.exit('user namespaces are off here')\n")
    try:
        with pytest.raises(SandboxUnavailable, match="as root.*user namespaces are off here.*non-root user"):
            run_tests(ADD, "assert add(1, 1) == 2", sandbox="bwrap")
    finally:
        monkeypatch.undo()
        for cache in caches:
            cache.cache_clear()
    assert run_tests(ADD, "assert add(1, 1) == 2", sandbox="bwrap").passed


def test_extract_code_and_parallel_runs_keep_order():
    assert extract_code("Here:\n```python\nx = 1\n```\nthen ```python\ny\n```") == "x = 1\n"
    assert extract_code("def f():\n    return 1") == "def f():\n    return 1"
    jobs = [{"code": ADD, "tests": f"assert add({i}, 1) == {i + 1 if i % 2 else 0}"} for i in range(6)]
    results = run_many(jobs, workers=2, progress=False)
    assert [r.passed for r in results] == [False, True, False, True, False, True]
