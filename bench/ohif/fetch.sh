#!/usr/bin/env bash
# Fetch OHIF's prebuilt viewer (@ohif/app's dist/) into node_modules/@ohif/app/dist.
#
# `npm install @ohif/app@3.13.2` cannot work: that release depends on
# @ohif/i18n@3.13.2 and @ohif/ui@3.13.2, which were never published (ETARGET).
# The benchmark needs only the built dist/, so this takes the package tarball
# with `npm pack` (the ordinary client, from the registry), checks it against
# the integrity pinned in package.json, and unpacks dist/. node_modules/ is
# git-ignored.
set -euo pipefail
cd "$(dirname "$0")"
version=$(node -p "require('./package.json').ohif.version")
integrity=$(node -p "require('./package.json').ohif.integrity")
target=node_modules/@ohif/app
if [ -f "$target/dist/index.html" ] && [ "$(cat "$target/.version" 2>/dev/null)" = "$version" ]; then
    echo "OHIF $version already in $target/dist"
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "@ohif/app@$version" >/dev/null)
tarball=$(ls "$tmp"/ohif-app-*.tgz)
actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
if [ "$actual" != "$integrity" ]; then
    echo "integrity mismatch for @ohif/app@$version: $actual" >&2
    exit 1
fi
rm -rf "$target"
mkdir -p "$target"
tar -xzf "$tarball" -C "$target" --strip-components=1 package/dist package/package.json package/LICENSE
echo "$version" >"$target/.version"
echo "OHIF $version in $target/dist"
