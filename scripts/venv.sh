#!/usr/bin/env bash
# Create .venv (Python 3.11) and install a requirements file into it, once.
# A stamp keyed by the SHA-256 of the requirements files makes a second run a
# no-op that takes milliseconds; any change to a pin reinstalls.
# Usage: scripts/venv.sh requirements.txt [more.txt ...]
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
pick_python() {
    for candidate in "${PYTHON:-}" python3.11 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2
    return 1
}

if [ ! -x "$VENV/bin/python" ]; then
    python=$(pick_python)
    if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
        scripts/install-system-deps.sh python3-venv
    fi
    echo "Creating $VENV with $("$python" --version)"
    "$python" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi

# Hash the files named and every file they include with -r.
files=()
collect() {
    local f=$1
    files+=("$f")
    while read -r inc; do
        collect "$(dirname "$f")/$inc"
    done < <(sed -n 's/^-r[[:space:]]*//p' "$f")
}
for req in "$@"; do collect "$req"; done
hash=$(cat "${files[@]}" | sha256sum | cut -c1-16)
stamp="$VENV/.installed-$(basename "$1" .txt)-$hash"
if [ -e "$stamp" ]; then
    exit 0
fi
echo "Installing Python packages from $* (once; takes a minute)"
args=()
for req in "$@"; do args+=(-r "$req"); done
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${args[@]}"
rm -f "$VENV/.installed-$(basename "$1" .txt)-"*
touch "$stamp"
