"""The code that runs inside the sandbox: `python -I -S -u sandbox_child.py`, stdlib only, never imported by the parent.

Two processes per run, each reading its job (JSON) from stdin, a pipe:
- the *candidate server* execs the candidate's code, reports its top-level names, then answers calls to its
  functions on a pipe. It never sees the tests.
- the *tests process* binds every name the candidate defines to a proxy that calls over the pipe (as plain exec of
  code + tests would see them, builtins' names included), runs the row's prefix (the prompt's own code, whose helpers
  stay the prompt's) if any, then the tests (and `check(entry_point)`), and writes the verdict to a pipe only the
  parent reads.
Arguments, results and exceptions cross as one line of Python literals read back with `ast.literal_eval` (never
pickle): a result that is not a plain value (an object with its own `__eq__`, a generator) fails the test. Limits are
set, stray descriptors closed and (where other processes share its uid) the process made non-dumpable before any
untrusted code runs; soft = hard, so the limits cannot be raised.
"""

import ast
import builtins
import json
import math
import os
import resource
import sys
import traceback

MAX_MESSAGE = 8 * 2**20  # bytes of one message; a longer one is not a plain value
MAX_NAME_VALUE = 2**16  # a top-level constant longer than this is not offered to the tests
MAX_DEPTH = 100
_NAN = "('\\x00nan',)"  # literal_eval has no NaN: it crosses as this tuple and is turned back
_NAN_VALUE = ("\x00nan",)


class SandboxError(BaseException):
    """A call that could not be made or answered. Not an Exception: a test's `except Exception` cannot swallow it."""


class NotPlain(ValueError):
    pass


def encode(value, depth: int = 0) -> str:
    """`value` as Python literal text (no raw newline), if it is built only of plain types; else NotPlain."""
    t = type(value)
    if value is None or t in (bool, int, str, bytes):
        return repr(value)
    if t is float:
        return repr(value) if math.isfinite(value) else _NAN if value != value else "1e999" if value > 0 else "-1e999"
    if t is complex and math.isfinite(value.real) and math.isfinite(value.imag):
        return repr(value)
    if depth > MAX_DEPTH:
        raise NotPlain("nested too deeply")
    if t in (list, tuple, set):
        items = [encode(v, depth + 1) for v in value]
        if t is set:
            return "{" + ", ".join(items) + "}" if items else "set()"
        text = ", ".join(items) + ("," if t is tuple and len(items) == 1 else "")
        return f"[{text}]" if t is list else f"({text})"
    if t is dict:
        return "{" + ", ".join(f"{encode(k, depth + 1)}: {encode(v, depth + 1)}" for k, v in value.items()) + "}"
    raise NotPlain(f"an object of type {t.__name__}")


def decode(text: str):
    """The value of literal text from the other side; NotPlain for anything else (or too long, too deep)."""
    if len(text) > MAX_MESSAGE:
        raise NotPlain("too long")
    try:
        value = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as e:
        raise NotPlain(type(e).__name__) from None
    return _restore(value) if "\\x00nan" in text else value


def _restore(v):
    if v == _NAN_VALUE and type(v) is tuple:
        return math.nan
    if type(v) in (list, tuple, set):
        return type(v)(_restore(x) for x in v)
    if type(v) is dict:
        return {_restore(k): _restore(x) for k, x in v.items()}
    return v


class Channel:
    """Line-framed literals over a pair of pipe ends, reads bounded by MAX_MESSAGE."""

    def __init__(self, read_fd: int, write_fd: int):
        self.r, self.w, self.buf = read_fd, write_fd, bytearray()

    def send(self, value) -> None:
        data = (encode(value) + "\n").encode("utf-8", "surrogatepass")
        while data:
            data = data[os.write(self.w, data):]

    def recv(self):
        while (end := self.buf.find(b"\n")) < 0:
            if len(self.buf) > MAX_MESSAGE:
                raise SandboxError(f"a message over {MAX_MESSAGE} bytes")
            chunk = os.read(self.r, 1 << 16)
            if not chunk:
                raise SandboxError("the candidate's process ended")
            self.buf += chunk
        line = bytes(self.buf[:end])
        del self.buf[: end + 1]
        return decode(line.decode("utf-8", "surrogatepass"))


def serve(job: dict, channel: Channel) -> None:
    """The candidate server: exec the code, offer its names, answer ("call", name, args, kwargs) until EOF."""
    ns = {"__name__": "__candidate__", "__builtins__": builtins}
    try:
        exec(compile(job["code"], "candidate.py", "exec"), ns)
    except BaseException as e:  # SystemExit included: exiting early is a failure, not a pass
        report(e)
        channel.send(("error", _describe(e)))
        return
    names = {}
    for name, value in list(ns.items()):
        if name.startswith("__"):
            continue
        if callable(value):
            names[name] = ("call",)
        else:
            try:
                if len(encode(value)) <= MAX_NAME_VALUE:
                    names[name] = ("value", value)
            except (NotPlain, ValueError, RecursionError):
                pass  # modules, objects: not offered
    channel.send(("names", names))
    while True:
        try:
            _, name, args, kwargs = channel.recv()
        except SandboxError:
            return  # the tests are done
        try:
            result = ns[name](*args, **kwargs)
        except BaseException as e:
            channel.send(("raise", type(e).__name__, _describe(e, with_type=False)))
            continue
        try:
            channel.send(("ok", result))
        except (NotPlain, ValueError, RecursionError):
            channel.send(("notplain", f"result of {name}() is not a plain value ({type(result).__name__})"))


def check(job: dict, channel: Channel, verdict_fd: int) -> None:
    """The tests process: bind the candidate's names, run the tests, write "passed" to the verdict pipe."""
    try:
        first = channel.recv()
    except NotPlain:
        first = ("",)
    if type(first) is not tuple or not first or first[0] != "names":
        raise SandboxError(f"the candidate's code raised {first[1]}" if first[:1] == ("error",) else
                           "the candidate's process did not offer its names")
    names, entry = first[1], job.get("entry_point")
    ns = {"__name__": "__tests__"}
    # every name the candidate defines reaches the candidate, a builtin's too (a row's `max`, `sorted`): the tests'
    # own imports and definitions, run after, take theirs back
    for name, offer in names.items():
        ns[name] = _proxy(name, channel) if offer[0] == "call" else offer[1]
    prefix = _parse(job.get("prefix") or "")
    if prefix is not None:  # the prompt's helpers (HumanEval's poly, encode_cyclic) are the prompt's, not redefinitions
        exec(compile(prefix, "prompt.py", "exec"), ns)
        for name in _unfinished(prefix) | {entry}:  # what the prompt leaves for the candidate to write is its own
            if name and names.get(name, ("",))[0] == "call":
                ns[name] = _proxy(name, channel)
    exec(compile(job["code"], "tests.py", "exec"), ns)
    if entry:  # HumanEval style: the tests define check(candidate)
        if names.get(entry, ("",))[0] != "call":
            raise NameError(f"the candidate defines no function {entry!r}")
        ns["check"](_proxy(entry, channel))
    os.write(verdict_fd, b"passed\n")


def _parse(code: str) -> ast.Module | None:
    """The prefix's syntax tree; None when there is none or it does not run on its own (it stops mid-statement):
    then the tests see the candidate's names only."""
    if not code.strip():
        return None
    try:
        return ast.parse(code, "prompt.py")
    except (SyntaxError, ValueError):
        return None


def _unfinished(tree: ast.Module) -> set[str]:
    """The functions a prompt leaves for the candidate: a body of only a docstring, `pass` or `...`."""
    def empty(stmt) -> bool:
        return isinstance(stmt, ast.Pass) or (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
                                              and (type(stmt.value.value) is str or stmt.value.value is Ellipsis))

    return {node.name for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and all(map(empty, node.body))}


def _proxy(name: str, channel: Channel):
    def call(*args, **kwargs):
        try:
            channel.send(("call", name, args, kwargs))
        except (NotPlain, ValueError, RecursionError):
            raise SandboxError(f"an argument of {name}() is not a plain value") from None
        try:
            reply = channel.recv()
        except NotPlain as e:
            raise SandboxError(f"result of {name}() is not a plain value ({e})") from None
        kind = reply[0] if type(reply) is tuple and reply else None
        if kind == "ok" and len(reply) == 2:
            return reply[1]
        if kind == "raise" and len(reply) == 3 and type(reply[1]) is str:
            raise _exception(reply[1])(reply[2])
        if kind == "notplain":
            raise SandboxError(str(reply[1:])[:300])
        raise SandboxError(f"a malformed reply from {name}()")

    call.__name__ = call.__qualname__ = name
    return call


def _exception(name: str) -> type:
    """The builtin exception of that name (so `except ValueError` in tests works), else a new one named so."""
    found = getattr(builtins, name, None)
    if isinstance(found, type) and issubclass(found, Exception):
        return found
    return type(name if name.isidentifier() else "CandidateError", (Exception,), {"__module__": "candidate"})


def _describe(e: BaseException, with_type: bool = True) -> str:
    try:
        text = str(e)[:1000]
    except BaseException:
        text = ""
    return f"{type(e).__name__}: {text}" if with_type else text


def report(e: BaseException) -> None:
    """The traceback on stderr, without this file's frames (they would only be noise in the output tail)."""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename != __file__]
    text = "".join(["Traceback (most recent call last):\n", *traceback.format_list(frames),
                    *traceback.format_exception_only(type(e), e)])
    sys.stderr.write(text)


def set_limits(cpu: int, memory: int, file_size: int, processes: int | None) -> None:
    """rlimits here rather than in the parent's preexec_fn, which is unsafe in a threaded parent."""
    limits = [(resource.RLIMIT_CPU, cpu), (resource.RLIMIT_AS, memory), (resource.RLIMIT_FSIZE, file_size),
              (resource.RLIMIT_NOFILE, 64), (resource.RLIMIT_CORE, 0)]
    if processes:  # per user in a new user namespace (bwrap); in hooks mode it would count all the user's processes
        limits.append((resource.RLIMIT_NPROC, processes))
    for what, n in limits:
        resource.setrlimit(what, (n, n))


def install_hooks(root: str) -> None:
    """hooks mode: an audit hook refusing sockets, processes, ctypes, signals and writes outside `root`. Not a
    boundary (native code passes it, `os.open(..., dir_fd=)` is not seen, stdlib internals can be patched); what
    it uses is bound when it is defined, so rebinding this module's names does not switch it off."""
    write = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    # event: (how many leading path arguments, how many trailing dir_fd arguments)
    paths = {"os.remove": (1, 1), "os.rmdir": (1, 1), "os.mkdir": (1, 1), "os.rename": (2, 2), "os.symlink": (2, 1),
             "os.link": (2, 2), "os.chmod": (1, 1), "os.chown": (1, 1), "os.truncate": (1, 0), "os.utime": (1, 1),
             "shutil.rmtree": (1, 1)}
    deny = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
            "pty.", "ctypes.", "os.kill", "os.killpg", "signal.pthread_kill", "sys.remote_exec", "os.mknod",
            "os.mkfifo", "os.setxattr", "os.removexattr", "os.chflags", "sqlite3.", "dbm.")
    modules = ("_posixsubprocess", "_xxsubinterpreters", "_xxinterpchannels", "_ctypes", "_multiprocessing")

    def inside(path, realpath=os.path.realpath, fsdecode=os.fsdecode, sep=os.sep):
        if isinstance(path, int):  # an already open descriptor: checked when it was opened
            return True
        try:
            real = realpath(fsdecode(path))
        except Exception:
            return False
        return real == root or real.startswith(root + sep)

    def hook(event, args, deny=deny, modules=modules, paths=paths, write=write, inside=inside):
        if event.startswith(deny) or (event == "import" and args[0] in modules):
            what = f"import of {args[0]}" if event == "import" else event
            raise PermissionError(f"sandbox: {what} is not allowed")
        if event == "open":
            path, mode, flags = args
            if ((mode and any(c in mode for c in "wax+")) or (flags or 0) & write) and not inside(path):
                raise PermissionError(f"sandbox: writing {path!r} outside the working directory")
        elif event in paths:
            n, fds = paths[event]
            if not all(inside(p) for p in args[:n]) or any(a not in (None, -1) for a in args[len(args) - fds:]):
                raise PermissionError(f"sandbox: {event} outside the working directory")
        elif event == "object.__setattr__" and args[1] in ("__code__", "__defaults__", "__kwdefaults__"):
            raise PermissionError("sandbox: changing a function's code or defaults is not allowed")

    sys.addaudithook(hook)


def main() -> None:
    if "--private" in sys.argv:  # before it holds anything: see _private in sandbox.py
        _undumpable()
    job = json.loads(sys.stdin.buffer.read())
    _close_others(set(job["fds"]))  # what bwrap or the caller left open (a namespace) is not the candidate's
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)  # input() sees end of file
    os.close(null)
    set_limits(*job["limits"])
    if job["hooks"]:
        install_hooks(os.path.realpath(os.getcwd()))
    r, w = job["fds"][:2]
    try:
        if job["role"] == "server":
            serve(job, Channel(r, w))
        else:
            check(job, Channel(r, w), job["fds"][2])
    except BaseException as e:
        report(e)
    sys.stderr.flush()
    os._exit(0)  # the verdict is the pipe's, not the exit status; skip atexit handlers the candidate registered


def _undumpable() -> None:
    """No other process of this uid (the candidate's, in hooks mode; the host's nobody, for a root caller) may read or
    write this process's memory or descriptors."""
    import _ctypes  # the bare C module: the ctypes package takes a few ms more to import, twice per candidate

    class Function(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL

    Function(_ctypes.dlsym(_ctypes.dlopen(None), "prctl"))(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE (4) to 0


def _close_others(keep: set[int]) -> None:
    start = 3
    for fd in sorted(keep):
        os.closerange(start, fd)
        start = fd + 1
    os.closerange(start, 2**31 - 1)


if __name__ == "__main__":
    main()
