#!/usr/bin/env bash
# Installs csi-driver-host-path's `hostpathplugin` at a pinned version into the peers cache
# (same cache as ci/install-deps.sh). Its go.mod carries `replace` directives, which
# `go install pkg@version` refuses, so the binary is built from a throwaway module outside the
# repository that requires the driver at that version and repeats its `replace` directives.
# Idempotent: a second run with the same version builds nothing. Needs no stdin.
set -euo pipefail

PEERS_BIN="${PEERS_BIN:-$HOME/.cache/csi-clone-conformance/bin}"
HOSTPATH_VERSION="${HOSTPATH_VERSION:-v1.18.0}"
module="github.com/kubernetes-csi/csi-driver-host-path"
stamp="$PEERS_BIN/.hostpathplugin-$HOSTPATH_VERSION"

mkdir -p "$PEERS_BIN"
if [[ -x "$PEERS_BIN/hostpathplugin" && -e "$stamp" ]]; then
    echo "ci: hostpathplugin $HOSTPATH_VERSION already in $PEERS_BIN" >&2
    exit 0
fi

export GOTOOLCHAIN=local GOFLAGS=-mod=mod
scratch="$(mktemp -d /var/tmp/hostpath-build.XXXXXX)"
trap 'rm -rf "$scratch"' EXIT
cd "$scratch"

echo "ci: building hostpathplugin $HOSTPATH_VERSION in $scratch" >&2
go mod init throwaway >/dev/null 2>&1
# `go mod download -json` names the cached go.mod of that exact version (field GoMod).
info="$(go mod download -json "$module@$HOSTPATH_VERSION")" || {
    echo "ci: cannot download $module@$HOSTPATH_VERSION from the module proxy" >&2
    echo "$info" >&2
    exit 1
}
upstream_mod="$(printf '%s\n' "$info" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
[[ -r "$upstream_mod" ]] || { echo "ci: no go.mod at '$upstream_mod'" >&2; exit 1; }

# Copy every replace directive, single-line (`replace a => b v`) or block (`replace ( ... )`).
# Relative replacement paths (./x, ../x) would point into a tree we do not have: refuse them.
awk '
    /^[[:space:]]*replace[[:space:]]*\(/ { inblock = 1; print "replace ("; next }
    inblock && /^[[:space:]]*\)/         { inblock = 0; print ")"; next }
    inblock                              { print; next }
    /^[[:space:]]*replace[[:space:]]/    { print }
' "$upstream_mod" >replaces.txt
if grep -Eq '=>[[:space:]]*\.\.?/' replaces.txt; then
    echo "ci: $module@$HOSTPATH_VERSION replaces with local paths; cannot build it from the proxy:" >&2
    cat replaces.txt >&2
    exit 1
fi
echo "ci: $(grep -c '=>' replaces.txt || true) replace directive(s) copied from upstream go.mod" >&2
cat replaces.txt >>go.mod

# The driver's own go directive may be newer than the local toolchain's default for `go mod init`.
go get "$module@$HOSTPATH_VERSION"
go build -trimpath -o "$scratch/hostpathplugin" "$module/cmd/hostpathplugin"

install -m 0755 "$scratch/hostpathplugin" "$PEERS_BIN/hostpathplugin"
rm -f "$PEERS_BIN"/.hostpathplugin-*
printf '%s %s\n' "$module" "$HOSTPATH_VERSION" >"$stamp"
echo "ci: installed hostpathplugin $HOSTPATH_VERSION into $PEERS_BIN" >&2
