#!/usr/bin/env bash
# The viewer benchmark against the production server on a scratch data folder:
#   bench/viewer_side.sh [extra viewer_bench.py arguments]
# Starts gunicorn (scripts/gunicorn.conf.py), creates a technologist at a site
# (no second factor needed, may STOW, sees the site's studies), runs
# bench/viewer_bench.py in Debian's Chromium, and stops the server.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
data=$(mktemp -d /tmp/pacs-viewer-bench.XXXXXX)
export PACS_DATA_DIR=$data PORT=${BENCH_PORT:-8793} HOST=127.0.0.1 DJANGO_SETTINGS_MODULE=pacs.settings
password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
cleanup() {
    [ -n "${server:-}" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    rm -rf "$data"
}
trap cleanup EXIT
$py manage.py migrate --noinput -v0
$py manage.py setup_roles -v0 >/dev/null
$py manage.py collectstatic --noinput -v0
BENCH_PASSWORD=$password $py manage.py shell -v0 -c "
import os
from django.contrib.auth.models import Group, User
from archive.models import Site
from portal.models import SiteMembership
site = Site.objects.create(code='bench', name='Bench', institution_names='General Hospital')
user = User.objects.create_user('benchtech', password=os.environ['BENCH_PASSWORD'])
user.groups.add(Group.objects.get(name='technologist'))
SiteMembership.objects.create(user=user, site=site)"
token=$($py manage.py issue_token benchtech --name viewer-bench | grep -o 'pacs_[A-Za-z0-9_-]*' | head -1)
WEB_LOG_LEVEL=warning .venv/bin/gunicorn -c scripts/gunicorn.conf.py pacs.wsgi:application &
server=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.2; done
$py bench/viewer_bench.py --base "http://127.0.0.1:$PORT" --token "$token" \
    --username benchtech --password "$password" "$@"
