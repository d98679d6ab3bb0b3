"""Compile Triton kernels for real GPU targets without a GPU (used by test_triton_compile.py).

    python tests/ops/triton_compile.py SPECS.json

SPECS.json holds a list of launch specialisations {module, kernel, signature, constexprs,
options} recorded from interpreter runs. Each is compiled to a cubin for every target in
``TARGETS`` (Triton's own front end, optimiser and bundled ptxas; no driver is needed), which the
interpreter never does: type errors, unsupported operations, tile shapes the hardware rejects
and register or shared-memory overflow only show up here. Prints one JSON line per
(spec, target): {"spec", "target", "ok", "error"}. Must run with TRITON_INTERPRET unset.
"""

from __future__ import annotations

import importlib
import json
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

TARGETS = (80, 90)  # A100, H100/H200: the architectures the CUDA module is built for


def main(path: str) -> None:
    for index, spec in enumerate(json.load(open(path))):
        kernel = getattr(importlib.import_module(spec["module"]), spec["kernel"])
        for cc in TARGETS:
            try:
                source = ASTSource(fn=kernel, signature=spec["signature"], constexprs=spec["constexprs"])
                triton.compile(source, target=GPUTarget("cuda", cc, 32), options=spec["options"])
                print(json.dumps({"spec": index, "target": f"sm_{cc}", "ok": True, "error": ""}), flush=True)
            except Exception as exc:  # noqa: BLE001  (every failure is reported to the test)
                print(json.dumps({"spec": index, "target": f"sm_{cc}", "ok": False,
                                  "error": f"{type(exc).__name__}: {exc}"[:2000]}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
