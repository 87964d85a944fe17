#!/usr/bin/env bash
# Installs what the tests and peer lanes need on a fresh Debian machine: filesystem tools
# from apt, and upstream peers with `go install` at pinned versions into a cache outside the
# repository. Idempotent: a second run installs nothing.
set -euo pipefail

PEERS_BIN="${PEERS_BIN:-$HOME/.cache/csi-clone-conformance/bin}"
CSI_SANITY_VERSION="${CSI_SANITY_VERSION:-v5.6.0}"
# Python grpcio (PyPI) for the non-Rust client test (reference-driver/tests/foreign_client.rs).
GRPCIO_VERSION="${GRPCIO_VERSION:-1.68.1}"
GRPCIO_VENV="${GRPCIO_VENV:-$HOME/.cache/csi-clone-conformance/python/grpcio-$GRPCIO_VERSION}"

need_apt=()
for tool in mkfs.ext4:e2fsprogs resize2fs:e2fsprogs mkfs.xfs:xfsprogs xfs_growfs:xfsprogs \
    losetup:mount python3:python3; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || need_apt+=("${tool#*:}")
done
if ((${#need_apt[@]})); then
    echo "ci: installing ${need_apt[*]} from apt" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

mkdir -p "$PEERS_BIN"
stamp="$PEERS_BIN/.csi-sanity-$CSI_SANITY_VERSION"
if [[ ! -x "$PEERS_BIN/csi-sanity" || ! -e "$stamp" ]]; then
    echo "ci: go install csi-sanity@$CSI_SANITY_VERSION" >&2
    GOTOOLCHAIN=local GOFLAGS=-mod=mod GOBIN="$PEERS_BIN" \
        go install "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@$CSI_SANITY_VERSION"
    rm -f "$PEERS_BIN"/.csi-sanity-*
    touch "$stamp"
fi
echo "ci: peers in $PEERS_BIN: $(ls "$PEERS_BIN" | tr '\n' ' ')" >&2

if [[ ! -e "$GRPCIO_VENV/.complete" ]]; then
    echo "ci: grpcio $GRPCIO_VERSION from PyPI into $GRPCIO_VENV" >&2
    rm -rf "$GRPCIO_VENV"
    # Debian's python3 makes a venv only with python3-venv (ensurepip) installed.
    if ! python3 -m venv "$GRPCIO_VENV" >/dev/null 2>&1; then
        rm -rf "$GRPCIO_VENV"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$GRPCIO_VENV"
    fi
    timeout 600 "$GRPCIO_VENV/bin/pip" install -q --disable-pip-version-check "grpcio==$GRPCIO_VERSION"
    touch "$GRPCIO_VENV/.complete"
fi
# A stable name for .ci/run, so the version is written only here.
ln -sfn "$GRPCIO_VENV" "$(dirname "$GRPCIO_VENV")/grpcio"
echo "ci: grpcio python: $GRPCIO_VENV/bin/python" >&2
