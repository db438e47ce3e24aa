#!/usr/bin/env bash
# Start a throwaway PostgreSQL cluster for the test pass and print its URL.
# The cluster lives in a temporary folder, listens on 127.0.0.1 on a free port,
# trusts local connections and skips fsync: it is for tests, never for data.
# Usage: eval "$(scripts/pg-throwaway.sh start)"   ... scripts/pg-throwaway.sh stop "$PG_DIR"
set -euo pipefail

pg_bin() {
    local dir
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        [ -x "$dir/initdb" ] && { echo "$dir"; return 0; }
    done
    dir=$(dirname "$(command -v initdb 2>/dev/null || true)")
    [ -x "$dir/initdb" ] && { echo "$dir"; return 0; }
    return 1
}

as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

case "${1:-}" in
available)
    pg_bin >/dev/null
    ;;
start)
    bin=$(pg_bin) || { echo "PostgreSQL server binaries not found" >&2; exit 1; }
    dir=$(mktemp -d /tmp/pacs-pg.XXXXXX)
    chmod 755 "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
        { cat "$dir/initdb.log" >&2; exit 1; }
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start -o \
        "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off \
         -c full_page_writes=off -c max_connections=200 -c shared_buffers=128MB" >/dev/null ||
        { cat "$dir/server.log" >&2; exit 1; }
    echo "export PG_DIR=$dir PG_BIN=$bin DATABASE_URL=postgres://postgres@127.0.0.1:$port/postgres"
    ;;
stop)
    dir=${2:?usage: stop DIR}
    bin=$(pg_bin)
    as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
*)
    echo "usage: $0 available|start|stop DIR" >&2
    exit 2
    ;;
esac
