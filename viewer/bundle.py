"""The viewer's ES modules joined into one file, without a build tool.

The viewer is written as plain ES modules (``static/viewer/**/*.js``). Loaded one by
one, a few dozen modules are as many requests queued on the browser's six HTTP/1.1
connections, next to the page's preloaded DICOMweb requests, before the first
line runs. The page therefore loads one script (``/viewer/viewer.js``): each module body in a
function scope of its own, in dependency order, its ``import`` lines turned into
reads of the modules before it and its ``export`` keywords into the object that
scope returns. Nothing is renamed, minified or transpiled, so the bundle reads
like the sources and behaves the same.

A module is known by its path under ``static/viewer`` without ``.js``
(``viewport/overlays``); its scope is the constant ``__`` + that path with ``/``
as ``$`` (``__viewport$overlays``), so two modules of the same name in different
folders stay apart.

The script is built from the modules the first time a process serves it and
kept in memory, so there is no generated file to forget. The transformation understands
only the forms the viewer's modules use: one-line ``import { a, b as c } from
'./x.js';`` whose path is relative (``./``, ``./tools/pan.js``, ``../geometry.js``),
stays inside ``static/viewer`` and names files and folders in lower-case letters
and digits; ``export`` before a function, class, const or let declaration; and
``export { a, b };``. Anything else (``import * as``, default exports, bare or
absolute specifiers, dynamic ``import()`` at the start of a line) is refused.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from functools import cache
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent.parent / "static" / "viewer"
ENTRY = "viewer"

PATH = r"(?:\./|(?:\.\./)+)(?:[a-z][a-z0-9]*/)*[a-z][a-z0-9]*"  # ./x, ./tools/x, ../x, without .js
IMPORT = re.compile(rf"^import \{{([^}}]*)\}} from '({PATH})\.js';\n", re.MULTILINE)
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


def _resolve(importer: str, specifier: str) -> str:
    """The module an import names: ``../geometry`` from ``tools/pan`` is ``geometry``."""
    name = posixpath.normpath(posixpath.join(posixpath.dirname(importer), specifier))
    if name.startswith("../") or name == "..":
        raise BundleError(f"{importer}.js imports {specifier}.js, outside the viewer's folder")
    return name


def _imports(name: str, source: str) -> list[tuple[str, str]]:
    """(names imported, module) for each import line of one module."""
    return [(spec, _resolve(name, specifier)) for spec, specifier in IMPORT.findall(source)]


def _scope(name: str) -> str:
    """The constant holding a module's exports: ``tools/pan`` -> ``__tools$pan``."""
    return "__" + name.replace("/", "$")


def _order(source_dir: Path, entry: str) -> list[str]:
    """Module names (paths without ``.js``), every module after the modules it imports."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise BundleError(f"import cycle through {name}.js")
        visiting.add(name)
        for _, dependency in _imports(name, (source_dir / f"{name}.js").read_text(encoding="utf-8")):
            visit(dependency)
        visiting.discard(name)
        order.append(name)

    visit(entry)
    return order


def _wrap(name: str, source: str) -> str:
    """One module as ``const __name = (() => { ...; return {exports}; })();``."""
    imports = [
        f"  const {{ {', '.join(n if n == alias else f'{n}: {alias}' for n, alias in _names(spec))} }} = {_scope(dep)};"
        for spec, dep in _imports(name, source)
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
        f"const {_scope(name)} = (() => {{",
        *imports,
        body.rstrip("\n"),
        f"  return {{ {returned} }};",
    ]
    return "\n".join(lines) + "\n})();\n"


def bundle(source_dir: Path = SOURCE_DIR, entry: str = ENTRY) -> str:
    """The viewer's modules joined into one script."""
    header = "// Joined by viewer/bundle.py from static/viewer/**/*.js.\n"
    parts = [_wrap(name, (source_dir / f"{name}.js").read_text(encoding="utf-8")) for name in _order(source_dir, entry)]
    return header + "\n".join(parts)


@cache
def script() -> tuple[str, str]:
    """The viewer's script and its strong ETag, built once per process."""
    text = bundle()
    return text, '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'
