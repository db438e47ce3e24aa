#!/usr/bin/env bash
# `make run`: install, migrate, load the demo once, print the sign-in, serve.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/venv.sh requirements.txt
export PACS_DATA_DIR=${PACS_DATA_DIR:-$PWD/var}
export HOST=${HOST:-127.0.0.1}
export PORT=${PORT:-8000}
# Chromium stores and sends Secure cookies on http://127.0.0.1 and localhost
# (checked with Debian's Chromium), so the demo keeps them Secure. A browser
# that refuses them (older Safari) needs PACS_SECURE_COOKIES=false, locally only.
export PACS_SECURE_COOKIES=${PACS_SECURE_COOKIES:-true}
py=.venv/bin/python

$py manage.py migrate --noinput -v0
$py manage.py collectstatic --noinput -v0
if [ "${PACS_DEMO:-1}" != 0 ]; then
    $py manage.py load_demo
fi
if compgen -G "*/management/commands/setup_roles.py" >/dev/null; then
    $py manage.py setup_roles -v0 >/dev/null
fi
$py manage.py create_demo_admin --url "http://$HOST:$PORT/"
echo "  Serving on http://$HOST:$PORT/ (Ctrl-C to stop)"
exec .venv/bin/gunicorn -c scripts/gunicorn.conf.py pacs.wsgi:application
