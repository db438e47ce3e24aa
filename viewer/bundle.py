"""The viewer's ES modules joined into one file, without a build tool.

The viewer is written as plain ES modules (``static/viewer/*.js``). Loaded one by
one, ten modules are ten requests queued on the browser's six HTTP/1.1
connections, next to the page's preloaded DICOMweb requests, before the first
line runs. The page therefore loads one script (``/viewer/viewer.js``): each module body in a
function scope of its own, in dependency order, its ``import`` lines turned into
reads of the modules before it and its ``export`` keywords into the object that
scope returns. Nothing is renamed, minified or transpiled, so the bundle reads
like the sources and behaves the same.

The script is built from the modules the first time a process serves it and
kept in memory, so there is no generated file to forget. The transformation understands
only the forms the viewer's modules use: one-line ``import { a, b as c } from
'./x.js';``, ``export`` before a function, class, const or let declaration, and
``export { a, b };``.
"""

from __future__ import annotations

import hashlib
import re
from functools import cache
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent.parent / "static" / "viewer"
ENTRY = "viewer"

IMPORT = re.compile(r"^import \{([^}]*)\} from '\./([a-z]+)\.js';\n", re.MULTILINE)
EXPORT_DECLARATION = re.compile(r"^export ((?:async )?function\*? |class |const |let )([A-Za-z_$][\w$]*)", re.MULTILINE)
EXPORT_LIST = re.compile(r"^export \{([^}]*)\};\n", re.MULTILINE)
ANY_EXPORT = re.compile(r"^\s*export\b", re.MULTILINE)
ANY_IMPORT = re.compile(r"^\s*import\b", re.MULTILINE)


class BundleError(ValueError):
    """A module uses a form of import or export the bundler does not understand."""


def _names(spec: str) -> list[tuple[str, str]]:
    """``a, b as c`` -> [(a, a), (b, c)]."""
    pairs = []
    for part in spec.split(","):
        words = part.split()
        if not words:
            continue
        if len(words) == 1:
            pairs.append((words[0], words[0]))
        elif len(words) == 3 and words[1] == "as":
            pairs.append((words[0], words[2]))
        else:
            raise BundleError(f"cannot read import/export list {spec!r}")
    return pairs


def _order(source_dir: Path, entry: str) -> list[str]:
    """Module names, every module after the modules it imports."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise BundleError(f"import cycle through {name}.js")
        visiting.add(name)
        for _, dependency in IMPORT.findall((source_dir / f"{name}.js").read_text(encoding="utf-8")):
            visit(dependency)
        visiting.discard(name)
        order.append(name)

    visit(entry)
    return order


def _wrap(name: str, source: str) -> str:
    """One module as ``const __name = (() => { ...; return {exports}; })();``."""
    imports = [
        f"  const {{ {', '.join(n if n == alias else f'{n}: {alias}' for n, alias in _names(spec))} }} = __{dep};"
        for spec, dep in IMPORT.findall(source)
    ]
    exported = [(n, n) for _, n in EXPORT_DECLARATION.findall(source)]
    for spec in EXPORT_LIST.findall(source):
        exported.extend(_names(spec))
    body = EXPORT_LIST.sub("", IMPORT.sub("", source))
    body = EXPORT_DECLARATION.sub(lambda m: m.group(1) + m.group(2), body)
    if ANY_EXPORT.search(body) or ANY_IMPORT.search(body):
        raise BundleError(f"{name}.js has an import or export the bundler does not understand")
    returned = ", ".join(local if local == public else f"{public}: {local}" for local, public in exported)
    lines = [
        f"// ---- {name}.js",
        f"const __{name} = (() => {{",
        *imports,
        body.rstrip("\n"),
        f"  return {{ {returned} }};",
    ]
    return "\n".join(lines) + "\n})();\n"


def bundle(source_dir: Path = SOURCE_DIR, entry: str = ENTRY) -> str:
    """The viewer's modules joined into one script."""
    header = "// Joined by viewer/bundle.py from static/viewer/*.js.\n"
    parts = [_wrap(name, (source_dir / f"{name}.js").read_text(encoding="utf-8")) for name in _order(source_dir, entry)]
    return header + "\n".join(parts)


@cache
def script() -> tuple[str, str]:
    """The viewer's script and its strong ETag, built once per process."""
    text = bundle()
    return text, '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'
