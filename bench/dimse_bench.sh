#!/usr/bin/env bash
# C-STORE throughput, side by side: DCMTK's storescu sends N synthetic 512x512 CT
# instances per association into our DICOM listener and into Orthanc, three runs.
#   bench/dimse_bench.sh            (N=200; needs Debian's dcmtk and orthanc)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${N:-200}
shared=${SHARED_BENCH:-../shared/bench}
work=$(mktemp -d /tmp/pacs-dimse-bench.XXXXXX)
py=.venv/bin/python
export PACS_DATA_DIR=$work/data SECRET_KEY=bench-only LOG_LEVEL=WARNING DJANGO_SETTINGS_MODULE=pacs.settings
cleanup() {
    [ -n "${listener:-}" ] && kill "$listener" 2>/dev/null && wait "$listener" 2>/dev/null
    "$shared/orthanc.sh" stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
$py - "$work/files" "$n" <<'PY'
import os, sys
import django
django.setup()
from archive.dicom.synthetic import StudySpec, make_series
root, n = sys.argv[1], int(sys.argv[2])
for run in range(3):
    os.makedirs(f"{root}/{run}", exist_ok=True)
    for i, part in enumerate(make_series(StudySpec(patient_id=f"BENCH-{run}"), "CT", count=n, size=512)):
        with open(f"{root}/{run}/{i:04d}.dcm", "wb") as fh:
            fh.write(part)
PY
$py manage.py migrate -v0
$py manage.py shell -v0 -c "from archive.models import Site; Site.objects.create(code='bench', name='Bench')"
PACS_DIMSE_ALLOWED="BENCH=bench" $py manage.py dicom_listener --host 127.0.0.1 --port 11998 >"$work/listener.log" 2>&1 &
listener=$!
"$shared/orthanc.sh" start >/dev/null
sleep 2
timed() { $py -c 'import subprocess, sys, time; t = time.perf_counter(); subprocess.run(sys.argv[1:], capture_output=True); print(f"{time.perf_counter() - t:.2f}")' "$@"; }
for run in 0 1 2; do
    ours=$(timed storescu -nh -aet BENCH -aec PACS 127.0.0.1 11998 "$work/files/$run"/*.dcm)
    theirs=$(timed storescu -nh -aet BENCH -aec ORTHANC 127.0.0.1 4242 "$work/files/$run"/*.dcm)
    $py -c "import sys; o, t, n = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]); print(f'run $run: ours {n / o:.0f} inst/s, orthanc {n / t:.0f} inst/s, ratio {t / o:.1f}x')" "$ours" "$theirs" "$n"
done
