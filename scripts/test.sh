#!/usr/bin/env bash
# `make test`: install what the tests need (once), check style and types, then
# run the whole suite on SQLite and, on CI or wherever PostgreSQL is
# installed, again on a throwaway PostgreSQL cluster. Any failure fails.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
step() { printf '\n== %s (%ss)\n' "$*" "$(($(date +%s) - started))"; }

step "System packages"
packages=(postgresql chromium dcmtk openssl orthanc)  # orthanc: the legacy PACS of the migration tests
# Node packages the tests run: the OpenID provider, the HTJ2K encoder, and
# TypeScript to check the viewer's JavaScript.
npm_dirs=(tests/portal/sso/oidc tests/archive/dicomweb/htj2k tests/viewer/js)
for dir in "${npm_dirs[@]}"; do
    if [ -f "$dir/package.json" ] && ! command -v npm >/dev/null 2>&1; then
        packages+=(nodejs npm)
        break
    fi
done
scripts/install-system-deps.sh "${packages[@]}"

step "Python packages"
scripts/venv.sh requirements-test.txt
for dir in "${npm_dirs[@]}"; do
    [ -f "$dir/package.json" ] || continue
    lock_hash=$(cat "$dir/package.json" "$dir/package-lock.json" 2>/dev/null | sha256sum | cut -c1-16)
    if [ ! -e "$dir/node_modules/.installed-$lock_hash" ]; then
        step "npm packages for $dir"
        npm --prefix "$dir" ci --no-audit --no-fund --loglevel=error
        touch "$dir/node_modules/.installed-$lock_hash"
    fi
done

export PATH="$PWD/.venv/bin:$PATH"
# Tests never touch ./var: each pass gets its own data folder and secret.
scratch=$(mktemp -d /tmp/pacs-test.XXXXXX)
pg_dir=""
cleanup() {
    [ -n "$pg_dir" ] && scripts/pg-throwaway.sh stop "$pg_dir"
    rm -rf "$scratch"
}
trap cleanup EXIT
export PACS_DATA_DIR="$scratch/sqlite" SECRET_KEY="test-only-$(date +%s%N)"
unset DATABASE_URL

step "ruff check"
ruff check .
step "ruff format --check"
ruff format --check .
step "mypy"
mypy .
step "import contracts"
lint-imports
step "makemigrations --check"
python manage.py makemigrations --check --dry-run
step "viewer JavaScript: tsc --checkJs and node --test"
(
    cd tests/viewer/js
    npx --no-install tsc -p .
    # node --test passes when it finds no test file at all: insist on some.
    shopt -s nullglob
    unit_tests=(*.test.mjs)
    if [ "${#unit_tests[@]}" -eq 0 ]; then
        echo "no viewer JavaScript tests (tests/viewer/js/*.test.mjs)" >&2
        exit 1
    fi
    node --test "${unit_tests[@]}"
)

pytest_args=(-p no:cacheprovider)
if [ -n "${PYTEST_WORKERS:-}" ]; then
    pytest_args+=(-n "$PYTEST_WORKERS" --dist loadfile)
fi
run_pytest() {
    local rc=0
    python -m pytest "${pytest_args[@]}" "$@" || rc=$?
    # Exit 5 means no test was collected: a failure like any other.
    [ "$rc" -eq 5 ] && echo "pytest collected no tests" >&2
    [ "$rc" -eq 0 ] || exit "$rc"
}

step "pytest on SQLite"
python manage.py collectstatic --noinput -v0
run_pytest "$@"

if [ "${CI:-}" = "true" ] || scripts/pg-throwaway.sh available; then
    step "pytest on PostgreSQL"
    eval "$(scripts/pg-throwaway.sh start)"
    pg_dir=$PG_DIR
    export PACS_DATA_DIR="$scratch/postgres"
    python manage.py collectstatic --noinput -v0
    run_pytest "$@"
else
    step "PostgreSQL pass skipped: no PostgreSQL server binaries (CI always runs it)"
fi
# The last line printed is pytest's own summary, which CI reads.
