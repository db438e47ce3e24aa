#!/usr/bin/env bash
# Side-by-side DICOMweb benchmark: our server and Orthanc, same machine, same run.
#
#   bench/side_by_side.sh [COUNT]        (default 2000 instances)
#   BENCH_REPEAT=N                       repetitions of each cheap read figure (default 20;
#                                        the shared script's own default of 5 is too noisy for a ratio)
#   BENCH_WARM_GIB=N                     memory to touch before the run (default: 3 × what the
#                                        run stores, at least 2 GiB; 0 to skip), see below
#
# Warm-up: on a virtual machine, the first write to a page of guest memory
# the guest has never used traps to the host. New files land in the page
# cache, so whichever server stores first into never-touched memory pays about
# 1 ms per 512 KiB object for it (measured: a 512 KiB write took 1.16 ms into
# fresh memory, 0.08 ms into memory touched once). The run therefore touches
# that much memory once and frees it, so both servers write into warm pages.
#
# Starts a reference Orthanc (Debian packages, via ../shared/bench/orthanc.sh),
# starts our server with gunicorn on a fresh data directory (SQLite, local
# files: the embedded default), runs ../shared/bench/dicomweb_bench.py against
# each, and prints bench/compare.py's ratio table. Results go to bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-2000}
shared=${SHARED_BENCH:-../shared/bench}
out=bench/results
mkdir -p "$out"
port=${BENCH_PORT:-8765}
repeat=${BENCH_REPEAT:-20}
data=$(mktemp -d /tmp/pacs-bench.XXXXXX)
py=.venv/bin/python
stamp=$(date +%Y%m%d-%H%M%S)

cleanup() {
    [ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    "$shared/orthanc.sh" stop >/dev/null 2>&1 || true
    rm -rf "$data"
}
trap cleanup EXIT

warm=${BENCH_WARM_GIB:-$(( count * 3 / 2048 + 1 > 2 ? count * 3 / 2048 + 1 : 2 ))}
if [ "$warm" -gt 0 ]; then
    $py - "$warm" <<'EOF'
import sys, time
t, n = time.perf_counter(), int(sys.argv[1]) << 30
b = bytearray(n)
b[::4096] = b"\x01" * len(range(0, n, 4096))  # one write per page
del b
print(f"warm-up: touched {n >> 30} GiB in {time.perf_counter() - t:.1f} s", file=sys.stderr)
EOF
fi

export PACS_DATA_DIR=$data DJANGO_SETTINGS_MODULE=pacs.settings PORT=$port HOST=127.0.0.1
$py manage.py migrate --noinput -v0
$py manage.py setup_roles -v0 >/dev/null
$py manage.py collectstatic --noinput -v0
$py - <<'EOF'
import django, uuid
django.setup()
from django.contrib.auth.models import User
User.objects.create_superuser("bench", "bench@example.org", uuid.uuid4().hex)
EOF
token=$($py manage.py issue_token bench --name bench | grep -o 'pacs_[A-Za-z0-9_-]*' | head -1)
WEB_LOG_LEVEL=warning .venv/bin/gunicorn -c scripts/gunicorn.conf.py pacs.wsgi:application &
server_pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.2; done

"$shared/orthanc.sh" start
$py "$shared/dicomweb_bench.py" --base http://127.0.0.1:8042/dicom-web --count "$count" --repeat "$repeat" \
    --out "$out/orthanc-$stamp.json" --label orthanc | tail -n +1 > "$out/orthanc-$stamp.txt"
$py "$shared/dicomweb_bench.py" --base "http://127.0.0.1:$port/dicom-web" --count "$count" --repeat "$repeat" \
    --out "$out/ours-$stamp.json" --label ours --header "Authorization: Bearer $token" \
    --server-pid "$server_pid" --server-disk "$data/objects" > "$out/ours-$stamp.txt"
cat "$out/ours-$stamp.txt"
echo
$py bench/compare.py "$out/ours-$stamp.json" "$out/orthanc-$stamp.json" || true
$py bench/compare.py "$out/ours-$stamp.json" "$out/orthanc-$stamp.json" --markdown > "$out/compare-$stamp.md" || true
echo "results: $out/*-$stamp.*"
