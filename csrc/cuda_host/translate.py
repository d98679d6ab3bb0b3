"""Translate a CUDA source (.cu/.cuh) for the host emulation in csrc/cuda_host (test-only).

    python translate.py SOURCE OUTPUT

copies SOURCE to OUTPUT with two rewrites, keeping every line where it was (a ``#line``
directive names SOURCE, so compiler messages, ``__FILE__`` and the emulation's reports point at
the original):

* ``kernel<T...><<<grid, block[, smem[, stream]]>>>(args)`` becomes
  ``::dtda::emu::launch("kernel<T...>", kernel<T...>, grid, block, smem, stream, args)``;
* a block-scope ``__shared__ TYPE a, b[N];`` becomes ``static thread_local TYPE a, b[N];``
  followed by one ``::dtda::emu::shared(...)`` registration per variable, which the emulation
  uses to poison the memory at the start of every block and to enforce the 48 KiB limit.

Everything else (``__global__``, ``__syncthreads``, the runtime calls) is left to the shim headers.
Unsupported forms (``extern __shared__``, a launch it cannot parse) stop with file:line.
Comments and string literals are never rewritten.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
CLOSE = {"(": ")", "[": "]", "{": "}"}


class TranslateError(Exception):
    pass


def mask_comments_and_strings(text: str) -> str:
    """``text`` with comments and string/char literals blanked (newlines kept), same length."""
    out = list(text)
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
        elif c in "\"'" and not (c == "'" and i > 0 and text[i - 1].isalnum()):  # not a digit separator
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            j += 1
        else:
            i += 1
            continue
        for k in range(i, min(j, n)):
            if out[k] != "\n":
                out[k] = " "
        i = j
    return "".join(out)


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _match_forward(code: str, start: int) -> int:
    """Index just past the bracket closing the one at ``start`` (nesting of (), [], {})."""
    stack = []
    for i in range(start, len(code)):
        c = code[i]
        if c in CLOSE:
            stack.append(CLOSE[c])
        elif c in ")]}":
            if not stack or stack.pop() != c:
                raise TranslateError(f"unbalanced {c!r}")
            if not stack:
                return i + 1
    raise TranslateError("unterminated bracket")


def _split_top_level(code: str, start: int, end: int) -> list[tuple[int, int]]:
    """Spans of the comma-separated parts of code[start:end] outside (), [], {} and <...>."""
    parts, depth, angle, begin = [], 0, 0, start
    for i in range(start, end):
        c = code[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0 and c == "<" and re.search(r"\w\s*$", code[begin:i]):
            angle += 1  # a template argument list after a name, e.g. Slice<Acc> (not `a < b`)
        elif depth == 0 and c == ">" and angle > 0:
            angle -= 1
        elif c == "," and depth == 0 and angle == 0:
            parts.append((begin, i))
            begin = i + 1
    parts.append((begin, end))
    return parts


def _kernel_start(code: str, end: int) -> int:
    """Start of the kernel expression ending at ``end`` (a name, maybe qualified, maybe with
    template arguments)."""
    i = end
    while i > 0 and code[i - 1].isspace():
        i -= 1
    if i > 0 and code[i - 1] == ">":  # template arguments: walk back to the matching '<'
        depth = 0
        while i > 0:
            i -= 1
            if code[i] == ">":
                depth += 1
            elif code[i] == "<":
                depth -= 1
                if depth == 0:
                    break
        if depth != 0:
            raise TranslateError("unbalanced template arguments before <<<")
    while i > 0 and (code[i - 1].isalnum() or code[i - 1] in "_:"):
        i -= 1
    if not IDENT.match(code, i) and not code.startswith("::", i):
        raise TranslateError("no kernel name before <<<")
    return i


def rewrite_launches(text: str, code: str, path: str) -> str:
    edits = []
    for m in re.finditer(r"<<<", code):
        try:
            if edits and m.start() < edits[-1][1]:
                continue
            k0 = _kernel_start(code, m.start())
            close = code.find(">>>", m.end())
            if close < 0:
                raise TranslateError("no >>> after <<<")
            config = [" ".join(code[a:b].split()) for a, b in _split_top_level(code, m.end(), close)]
            if not 2 <= len(config) <= 4 or not all(config):
                raise TranslateError(f"expected <<<grid, block[, smem[, stream]]>>>, got {len(config)} parts")
            config += ["0", "nullptr"][len(config) - 2:]
            p = close + 3
            while p < len(code) and code[p].isspace():
                p += 1
            if p >= len(code) or code[p] != "(":
                raise TranslateError("no argument list after >>>")
            p_end = _match_forward(code, p)
        except TranslateError as exc:
            raise TranslateError(f"{path}:{_line(text, m.start())}: cannot translate the launch: {exc}") from None
        kernel = " ".join(code[k0:m.start()].split())
        args = text[p + 1:p_end - 1]
        # The kernel and configuration are joined onto one line; their newlines move after the
        # call so that later lines keep their numbers (those inside the arguments stay).
        newlines = "\n" * text.count("\n", k0, p + 1)
        sep = ", " if args.strip() else ""
        replacement = f'::dtda::emu::launch("{kernel}", {kernel}, {", ".join(config)}{sep}{args}){newlines}'

        edits.append((k0, p_end, replacement))
    return _apply(text, edits)


def rewrite_shared(text: str, code: str, path: str) -> str:
    edits = []
    for m in re.finditer(r"\b__shared__\b", code):
        line = _line(text, m.start())
        before = code[max(0, m.start() - 80):m.start()].split()
        if before and before[-1] == "extern":
            raise TranslateError(f"{path}:{line}: extern __shared__ (dynamic shared memory) is not emulated")
        end = code.find(";", m.end())
        if end < 0:
            raise TranslateError(f"{path}:{line}: no ';' after __shared__")
        names = []
        for a, b in _split_top_level(code, m.end(), end):
            declarator = code[a:b].split("=")[0].split("[")[0]
            idents = IDENT.findall(declarator)
            if not idents:
                raise TranslateError(f"{path}:{line}: cannot find the name in '{text[a:b].strip()}'")
            names.append(idents[-1])
        registrations = "".join(f' ::dtda::emu::shared({v}, "{v}", __FILE__, __LINE__);' for v in names)
        edits.append((m.start(), m.end(), "static thread_local"))
        edits.append((end + 1, end + 1, registrations))
    return _apply(text, edits)


def _apply(text: str, edits: list[tuple[int, int, str]]) -> str:
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    return text


def translate(source: Path) -> str:
    text = source.read_text()
    text = rewrite_launches(text, mask_comments_and_strings(text), str(source))
    text = rewrite_shared(text, mask_comments_and_strings(text), str(source))
    return f'#line 1 "{source.resolve()}"\n' + text


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    source, output = Path(argv[1]), Path(argv[2])
    try:
        result = translate(source)
    except TranslateError as exc:
        print(f"translate.py: {exc}", file=sys.stderr)
        return 1
    output.parent.mkdir(parents=True, exist_ok=True)
    if not output.exists() or output.read_text() != result:  # unchanged output: no recompilation
        output.write_text(result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
