"""The runner's side of a job: run the program, then answer the judge's requests.

This code runs in the confined process, next to the model's program, so nothing here is
trusted: a program may rewrite any of it. What the judge gets back is plain data (wire.py),
checked on arrival, and the verdict is decided in the judge. This module only has to serve
honest programs faithfully.

Requests, one at a time, each answered with ["ok", value], ["raise", details] or ["exit", why]:
    ["exec", program, [name, ...]]  run the program as __main__; its values for those of
                                 these names it defines
    ["globals", [name, ...]]     the same, later
    ["call", handle, args, kwargs]
    ["getattr", handle, name], ["iter", handle], ["len", handle], ["getitem", handle, key],
    ["str", handle], ["repr", handle]
The output is flushed after every reply, so it is all there when the judge is done.
"""
import builtins
import os
import sys
# Bound here so that a program patching builtins cannot break the runner's replies.
from builtins import (BaseException, SystemExit, compile, exec, getattr, isinstance, len, list, repr,  # noqa: A004
                      str, type)

import wire

REASON_CHARS = 300
MEMORY_REPLY = wire.dumps(["raise", {"type": "MemoryError", "builtin": True, "memory": True, "message": "",
                                     "where": ""}])


class Runner:
    def __init__(self, requests, replies):
        self.requests, self.replies = requests, replies
        self.objects = []  # handle number -> object
        self.namespace = {"__name__": "__main__", "__builtins__": builtins, "__doc__": None}
        self.program_lines = []

    def handle_of(self, value):
        self.objects.append(value)
        return len(self.objects) - 1

    def encode(self, value):
        return wire.encode(value, self.handle_of)

    def decode(self, data):
        return wire.decode(data, self.objects.__getitem__, __import__)

    def serve(self, request):
        while True:
            if request is None:  # the judge is done
                return
            try:
                reply = ["ok", self.encode(self.answer(request))]
            except MemoryError:  # little memory is left: drop the program's, send a reply built beforehand
                self.namespace.clear()
                self.objects.clear()
                reply = MEMORY_REPLY
            except SystemExit as error:
                reply = ["exit", f"SystemExit({describe_code(error)}) raised in the program"]
            except BaseException as error:
                reply = ["raise", self.details(error)]
            flush()
            wire.send(self.replies, reply)
            request = wire.receive(self.requests)

    def answer(self, request):
        verb, *arguments = request
        if verb == "exec":
            self.program_lines = arguments[0].splitlines()
            exec(compile(arguments[0], "<program>", "exec"), self.namespace)
        if verb in ("exec", "globals"):
            return {name: self.namespace[name] for name in arguments[-1] if name in self.namespace}
        target = self.objects[arguments[0]]
        if verb == "call":
            return target(*self.decode(arguments[1]), **self.decode(arguments[2]))
        if verb == "getattr":
            return getattr(target, arguments[1])
        if verb == "iter":
            return list(target)
        if verb == "len":
            return len(target)
        if verb == "getitem":
            return target[self.decode(arguments[1])]
        if verb in ("str", "repr"):
            return str(target) if verb == "str" else repr(target)
        raise ValueError(f"unknown request {verb!r}")

    def details(self, error):
        """The exception's type, message and innermost program line, as plain text."""
        name = type(error).__name__
        try:
            text = error.msg if isinstance(error, SyntaxError) else str(error)
        except BaseException:
            text = ""
        line = error.lineno if isinstance(error, SyntaxError) and error.filename == "<program>" else None
        traceback = error.__traceback__
        while traceback is not None:
            if traceback.tb_frame.f_code.co_filename == "<program>":
                line = traceback.tb_lineno
            traceback = traceback.tb_next
        where = ""
        if line and 0 < line <= len(self.program_lines):
            where = f"program line {line}: {self.program_lines[line - 1].strip()}"
        builtin = getattr(builtins, name, None)
        return {"type": str(name), "builtin": isinstance(builtin, type) and type(error) is builtin,
                "memory": isinstance(error, MemoryError), "message": " ".join(str(text).split())[:REASON_CHARS],
                "where": where[:REASON_CHARS]}


def describe_code(error):
    try:
        return repr(error.code)[:40]
    except BaseException:
        return "?"


def flush():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass


def serve(requests, replies, first):
    """The runner's whole life after confinement, from the judge's first request on; never
    returns."""
    try:
        Runner(requests, replies).serve(first)
    finally:
        os._exit(0)
