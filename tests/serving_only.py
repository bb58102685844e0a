"""Run Python as a serving machine would: any import outside the serving install
(requirements-serve.txt, or the file named by $SERVING, and what its packages require; torch is
not among them) fails, and in the end torch must not have been imported.

    python tests/serving_only.py SBERT-ARGUMENTS...     # `sbert ARGS`, exit code passed on
    python tests/serving_only.py -c CODE ARGUMENTS...   # run CODE with sys.argv = [-c, ARGS...]
"""

import os
import re
import sys
from importlib.metadata import PackageNotFoundError, distribution

from packaging.requirements import Requirement


def normal(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(requirements):
    seen, todo = set(), list(requirements)
    while todo:
        req = Requirement(todo.pop())
        if normal(req.name) in seen or (req.marker and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(normal(req.name))
        try:
            todo += distribution(req.name).requires or []
        except PackageNotFoundError:  # not installed here: nothing of it can be imported anyway
            seen.discard(normal(req.name))
    return seen


def top_level(name):  # from the files a distribution installed (3.10 lacks a full mapping)
    files = distribution(name).files or []
    return {
        f.parts[0].split(".")[0]
        for f in files
        if not f.parts[0].endswith((".dist-info", ".data")) and f.parts[0] != ".."
    }


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVING = os.environ.get("SERVING") or os.path.join(ROOT, "requirements-serve.txt")
with open(SERVING, encoding="utf-8") as f:
    lines = [x.split("#")[0].strip() for x in f]
allowed = set().union(*(top_level(name) for name in closure([x for x in lines if x])))
for name in [m for m in sys.modules if m.split(".")[0] == "packaging"]:
    del sys.modules[name]  # imported above, for this check only


class ServingOnly:
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        stdlib = top in sys.stdlib_module_names or top.startswith("_sysconfigdata")
        if top not in allowed and not stdlib and top != "sbert":
            raise ModuleNotFoundError(f"{name} is not in requirements-serve.txt", name=name)


sys.meta_path.insert(0, ServingOnly())

sys.path.insert(0, ROOT)
if sys.argv[1:2] == ["-c"]:
    code, sys.argv = sys.argv[2], ["-c", *sys.argv[3:]]
    exec(compile(code, "<serving-only>", "exec"))
    status = 0
else:
    from sbert import cli

    status = cli.main(sys.argv[1:])
assert "torch" not in sys.modules, "torch was imported"
sys.exit(status)
