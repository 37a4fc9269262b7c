"""The judge's side of a job: run the trusted tests, calling into the program only remotely.

Runs in a process forked from the worker (serve_jobs), outside the sandbox, with no
model-written code in it. The tests' names that the program defines (the function under test,
its helpers, constants) are bound to what the runner sends back: plain data, rebuilt by
wire.decode into exact builtin types, or a Handle, whose calls and attribute reads are
requests to the runner and which refuses to be compared, hashed or truth-tested. Builtins
and modules are always the judge's own; `__program__` reaches any of the program's names
explicitly (for a function under test that shadows a builtin, such as MBPP's `sum`).

So a verdict of "passed" means: the trusted tests, run in a trusted interpreter, ran to
their end on the values the program computed.
"""
import builtins
import importlib
import os
import socket
import sys
import types

import wire

REASON_CHARS = 300
CONTAINER_TAGS = {tuple: "t", set: "s", frozenset: "z"}
COMPILED = {}  # tests text -> (code, wanted names)
COMPILED_MAX = 512
ACTS_ON_IMPORT = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "__hello__", "__phello__"}


class ProgramExited(BaseException):
    """The program raised SystemExit during a call."""


class RunnerGone(BaseException):
    """The runner stopped answering, or answered outside the protocol (garbage on the reply
    pipe): the worker says how it ended, if it ended by itself."""


class ProgramError(Exception):
    """An exception the program raised that is not a builtin exception type."""


class Channel:
    """Requests to the runner, one at a time."""

    def __init__(self, requests, replies):
        self.requests, self.replies = requests, replies

    def ask(self, *request):
        try:
            wire.send(self.requests, list(request))
            reply = wire.receive(self.replies)
        except OSError:  # a closed pipe
            raise RunnerGone("the program stopped answering") from None
        except (ValueError, RecursionError, wire.NotPlainData):  # bytes that are not a message
            raise RunnerGone("not plain data: a malformed reply from the program") from None
        if reply is None:
            raise RunnerGone("the program stopped answering")
        if type(reply) is not list or len(reply) != 2 or reply[0] not in ("ok", "raise", "exit"):
            raise RunnerGone("not plain data: a malformed reply from the program")
        kind, body = reply
        if kind == "ok":
            return wire.decode(body, self.handle, import_trusted)
        if kind == "exit":
            raise ProgramExited(wire.printable(str(body))[:REASON_CHARS])
        raise remote_exception(body)

    def handle(self, number):
        return Handle(self, number)

    def encode(self, value):
        """Arguments for the runner: plain data and handles, nothing else."""
        def refuse(value):
            raise wire.NotPlainData(f"the tests passed a {type(value).__name__} to the program")
        if isinstance(value, Handle):
            return {"h": object.__getattribute__(value, "_number")}
        kind = type(value)
        if kind is list:
            return [self.encode(item) for item in value]
        if kind in CONTAINER_TAGS:
            return {CONTAINER_TAGS[kind]: [self.encode(item) for item in value]}
        if kind is dict:
            return {"d": [[self.encode(key), self.encode(item)] for key, item in value.items()]}
        return wire.encode(value, refuse)


def import_trusted(name):
    """The judge's own module of that name (never the program's copy): one the judge has
    imported already, or from the standard library, less those that act on import. The name
    comes from the program, so no other module is imported on its word."""
    top = str(name).partition(".")[0]
    if name not in sys.modules and (top not in sys.stdlib_module_names or top in ACTS_ON_IMPORT):
        raise wire.NotPlainData(f"module {wire.printable(str(name))[:80]!r} of the program")
    try:
        return importlib.import_module(name)
    except Exception:
        raise wire.NotPlainData(f"module {name!r} of the program") from None


def remote_exception(details):
    """The judge-side exception for one the program raised: the builtin type where it is one
    (so tests' `except ValueError` still work), else ProgramError; `details` rides along."""
    if type(details) is not dict:
        return wire.NotPlainData("a malformed exception from the program")
    name = wire.printable(str(details.get("type", "Exception")))[:80]
    message = wire.printable(str(details.get("message", "")))[:REASON_CHARS]
    kind = getattr(builtins, name, None) if details.get("builtin") is True else None
    if not (isinstance(kind, type) and issubclass(kind, Exception)) or kind is not getattr(builtins, name):
        kind = ProgramError
    try:
        error = kind(message)
    except Exception:  # a builtin exception that wants other arguments
        error = ProgramError(message)
    error.remote = {"type": name, "message": message, "memory": details.get("memory") is True,
                    "where": wire.printable(str(details.get("where", "")))[:REASON_CHARS]}
    return error


def _not_plain(operation):
    def refuse(self, *args):
        raise wire.NotPlainData(f"{operation} of a value that is not plain data")
    return refuse


class Handle:
    """An object the program returned that is not plain data. It can be called, and its
    attributes read, in the runner; it cannot be compared, hashed or truth-tested."""
    __slots__ = ("_channel", "_number")

    def __init__(self, channel, number):
        object.__setattr__(self, "_channel", channel)
        object.__setattr__(self, "_number", number)

    def _ask(self, verb, *arguments):
        return object.__getattribute__(self, "_channel").ask(verb, object.__getattribute__(self, "_number"), *arguments)

    def __call__(self, *args, **kwargs):
        channel = object.__getattribute__(self, "_channel")
        return self._ask("call", channel.encode(list(args)), channel.encode(kwargs))

    def __getattr__(self, name):
        return self._ask("getattr", name)

    def __iter__(self):
        values = self._ask("iter")
        if type(values) is not list:
            raise wire.NotPlainData("iteration that gave no list")
        return iter(values)

    def __len__(self):
        length = self._ask("len")
        if type(length) is not int:
            raise wire.NotPlainData("a length that is not an int")
        return length

    def __getitem__(self, key):
        return self._ask("getitem", object.__getattribute__(self, "_channel").encode(key))

    def __str__(self):
        return self._text("str")

    def __repr__(self):
        return self._text("repr")

    def _text(self, verb):
        text = self._ask(verb)
        if type(text) is not str:
            raise wire.NotPlainData(f"{verb}() that is not a str")
        return text

    __eq__ = _not_plain("comparison")
    __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __eq__
    __hash__ = _not_plain("hashing")
    __bool__ = _not_plain("truth-testing")
    __contains__ = _not_plain("membership test")
    __setattr__ = _not_plain("setting an attribute")
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _not_plain("arithmetic")
    __mod__ = __rmod__ = __floordiv__ = __rfloordiv__ = __pow__ = __rpow__ = __neg__ = __abs__ = __add__
    __index__ = __int__ = __float__ = _not_plain("conversion")


class ProgramNames:
    """`__program__`: any of the program's top-level names, fetched on use."""
    __slots__ = ("_channel",)

    def __init__(self, channel):
        object.__setattr__(self, "_channel", channel)

    def __getattr__(self, name):
        found = object.__getattribute__(self, "_channel").ask("globals", [name])
        if name not in found:
            raise NameError(f"the program defines no {name!r}")
        return found[name]


def referenced_names(code):
    """Every name the tests' code (and the functions in it) may look up."""
    names = set(code.co_names)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            names |= referenced_names(constant)
    return names


def wanted_names(code):
    """The names the tests may take from the program: builtins are always the judge's own."""
    return sorted(name for name in referenced_names(code) if not hasattr(builtins, name))


def test_namespace(channel, found, wanted):
    """The tests' globals: the program's values (`found`) for the names the tests use; modules
    among them arrive as the judge's own import (wire.decode)."""
    if type(found) is not dict:
        raise wire.NotPlainData("a malformed reply from the program")
    namespace = {"__name__": "__main__", "__builtins__": builtins, "__program__": ProgramNames(channel)}
    namespace.update((name, value) for name, value in found.items() if type(name) is str and name in wanted)
    return namespace


def compiled(tests):
    """The tests' code and wanted names, compiled once per text: a problem's tests come back
    for each of its samples, and the judge outlives jobs (the tests are trusted: caching
    their code object is safe)."""
    found = COMPILED.get(tests)
    if found is None:
        code = compile(tests, "<tests>", "exec")
        if len(COMPILED) >= COMPILED_MAX:
            COMPILED.clear()
        found = COMPILED[tests] = code, wanted_names(code)
    return found


def judge(channel, program, tests):
    """(status, reason); status "gone" when the runner vanished (the worker classifies it)."""
    phase = "program"
    try:
        code, wanted = compiled(tests)
        found = channel.ask("exec", program, wanted)
        phase = "tests"
        exec(code, test_namespace(channel, found, wanted))
        return "passed", "all tests passed"
    except RunnerGone as error:
        return "gone", str(error)
    except ProgramExited as error:
        return "exited_early", f"{error} before the tests finished"
    except wire.NotPlainData as error:
        return "failed", f"not plain data: {error}"
    except BaseException as error:
        return outcome(error, phase, tests)


def outcome(error, phase, tests):
    """Status and one-line reason for an exception that ended the tests (or the program)."""
    remote = getattr(error, "remote", None)
    if remote:
        if remote["memory"]:
            return "memory", "MemoryError: ran out of memory (memory limit)"
        message = f"{remote['type']}: {remote['message']}" if remote["message"] else remote["type"]
        where = remote["where"] or (f"in the {phase}" if phase == "program" else "")
        status = "error"
    else:
        if isinstance(error, MemoryError):
            return "memory", "MemoryError: the tests ran out of memory"
        if isinstance(error, SystemExit):
            return "exited_early", "SystemExit raised in the tests"
        status = "failed" if isinstance(error, AssertionError) else "error"
        text = str(error)
        message = f"{type(error).__name__}: {text}" if text else type(error).__name__
        line = error.lineno if isinstance(error, SyntaxError) else None
        traceback = error.__traceback__
        while traceback is not None:
            if traceback.tb_frame.f_code.co_filename == "<tests>":
                line = traceback.tb_lineno
            traceback = traceback.tb_next
        lines = tests.splitlines()
        where = f"tests line {line}: {lines[line - 1].strip()}" if line and 0 < line <= len(lines) else ""
    reason = f"{message} ({where})" if where else message
    return status, wire.printable(" ".join(reason.split()))[:REASON_CHARS]


def serve_jobs(control):
    """The judge process's life: one job at a time from the worker over `control` (a
    SOCK_SEQPACKET socket), each a message carrying five descriptors: the job's text (a pipe),
    the requests and replies pipes to its runner, and the job's stdout and stderr, where the
    tests' own output goes. Answers [status, reason]. It outlives jobs, so the tests' imports
    and memory pages are paid once; the worker replaces it if a job ever leaves it stuck."""
    null = os.open(os.devnull, os.O_RDWR)
    while True:
        try:
            _, fds, _, _ = socket.recv_fds(control, 16, 5)
        except OSError:
            return
        if len(fds) != 5:
            return  # the worker has gone
        job_text, requests, replies, out, err = fds
        job = wire.receive(job_text)
        os.close(job_text)
        os.dup2(out, 1)
        os.dup2(err, 2)
        try:
            verdict = judge(Channel(requests, replies), job["program"], job["tests"])
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            for fd in (1, 2):
                os.dup2(null, fd)
            for fd in (requests, replies, out, err):
                os.close(fd)
        control.send(wire.dumps(list(verdict)))
