#!/usr/bin/env bash
# `make run`: install, migrate, load the demo once, print the sign-in, then run
# the three processes side by side: the web server (gunicorn), the DICOM node
# (manage.py dicom_listener) and the task worker (manage.py db_worker). When any
# of them exits, or on Ctrl-C or SIGTERM, all of them stop.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/venv.sh requirements.txt
export PACS_DATA_DIR=${PACS_DATA_DIR:-$PWD/var}
export HOST=${HOST:-127.0.0.1}
export PORT=${PORT:-8000}
export PACS_DIMSE_PORT=${PACS_DIMSE_PORT:-11112}
dimse_ae=${PACS_DIMSE_AE_TITLE:-PACS}
# Chromium stores and sends Secure cookies on http://127.0.0.1 and localhost
# (checked with Debian's Chromium), so the demo keeps them Secure. A browser
# that refuses them (older Safari) needs PACS_SECURE_COOKIES=false, locally only.
export PACS_SECURE_COOKIES=${PACS_SECURE_COOKIES:-true}
py=.venv/bin/python

$py manage.py migrate --noinput -v0
$py manage.py collectstatic --noinput -v0
if [ "${PACS_DEMO:-1}" != 0 ]; then
    $py manage.py load_demo
    # The demo device: from this machine, AE DEMO stores into, queries and retrieves from the demo site.
    $py manage.py dicom_device add --if-missing --ae DEMO --host 127.0.0.1 --site demo --store --query --retrieve \
        --description "make run demo: storescu, findscu and getscu -aet DEMO from this machine" >/dev/null
fi
if compgen -G "*/management/commands/setup_roles.py" >/dev/null; then
    $py manage.py setup_roles -v0 >/dev/null
fi
$py manage.py create_demo_admin --url "http://$HOST:$PORT/"
echo "  DICOM node $dimse_ae on $HOST:$PACS_DIMSE_PORT (devices: admin > DICOM devices, or manage.py dicom_device)"
if [ "${PACS_DEMO:-1}" != 0 ]; then
    echo "    try: storescu -aet DEMO -aec $dimse_ae $HOST $PACS_DIMSE_PORT file.dcm"
    echo "         findscu -S -aet DEMO -aec $dimse_ae $HOST $PACS_DIMSE_PORT -k QueryRetrieveLevel=STUDY -k PatientName"
fi
echo "  Serving on http://$HOST:$PORT/ (Ctrl-C to stop)"

children=()
stop_all() {
    trap - INT TERM
    kill -TERM "${children[@]}" 2>/dev/null || true
    wait "${children[@]}" 2>/dev/null || true
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
.venv/bin/gunicorn -c scripts/gunicorn.conf.py pacs.wsgi:application &
children+=($!)
$py manage.py dicom_listener --host "$HOST" --port "$PACS_DIMSE_PORT" --ae "$dimse_ae" &
children+=($!)
$py manage.py db_worker &
children+=($!)
$py manage.py housekeeping &  # claims that went idle, lifecycle rules: PACS_HOUSEKEEPING
children+=($!)
status=0
wait -n || status=$?
echo "  A process stopped (status $status): stopping the others" >&2
stop_all
exit "$status"
