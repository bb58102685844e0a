"""Run the `sbert` command line in this process, with one function booby-trapped.

    python tests/crash_at.py MODULE:ATTR N ACTION [TEXT] -- SBERT ARGUMENTS...

At the N-th call of MODULE:ATTR (counting only calls whose arguments mention TEXT, if given):
    kill  SIGKILL this process before the call: nothing after it runs, no cleanup, no flush;
    half  (for torch.save(obj, file)) write the first half of the bytes, then SIGKILL;
    nan   make the losses of the Output returned by the call NaN (MultiTaskModel.forward).

The reliability tests use it to stop a real training run at a chosen point, or to feed it a
numerical fault, with no test hook in sbert itself.
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def trap(target: str, n: int, action: str, text: str = "") -> None:
    module, _, attr = target.partition(":")
    owner = importlib.import_module(module)
    *parents, name = attr.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    original, calls = getattr(owner, name), 0

    def trapped(*args, **kwargs):
        nonlocal calls
        if text and text not in repr(args):  # repr only when asked: a state dict's is huge
            return original(*args, **kwargs)
        calls += 1
        if calls != n:
            return original(*args, **kwargs)
        if action == "nan":
            output = original(*args, **kwargs)
            nan = {name: loss * float("nan") for name, loss in output.losses.items()}
            return dataclasses.replace(output, losses=nan)
        if action == "half":
            obj, file = args[:2]
            buffer = io.BytesIO()
            original(obj, buffer)
            file.write(buffer.getvalue()[: buffer.tell() // 2])
            file.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    setattr(owner, name, trapped)


if __name__ == "__main__":
    split = sys.argv.index("--")
    target, n, action, *text = sys.argv[1:split]
    trap(target, int(n), action, *text)
    from sbert.cli import main

    sys.exit(main(sys.argv[split + 1 :]))
