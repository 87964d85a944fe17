#!/usr/bin/env bash
# Builds the pinned upstream Kubernetes peers that `run --local-cluster` starts, and extracts the
# Debian node packages beside them, into a cache keyed by versions:
#
#   $CACHE/k8s-bin/<key>/   kube-apiserver kube-controller-manager kube-scheduler kubelet etcd
#                           csi-provisioner csi-resizer csi-snapshotter snapshot-controller
#                           containerd containerd-shim-runc-v2 ctr runc busybox
#                           cni/loopback         the CNI plugin containerd needs to report ready
#                           crds/*.yaml          snapshot CRDs (snapshotter's client module) and
#                                                the ReferenceGrant CRD (gateway-api)
#                           rbac/*.yaml          the sidecars' upstream RBAC, from their modules
#                           images/busybox.tar   pod image + pause image (docker-archive)
#                           VERSIONS             what was built, one "name version" per line
#   $CACHE/k8s-bin/current -> <key>              the default of `--k8s-bin`
#
# Each Go peer is built once per (component version, Go version) from a throwaway module outside
# the repository: modules with `replace` lines cannot be `go install`ed, so the throwaway module
# repeats them, pointing local paths at the published module of the same release. Nothing is
# installed on the host: Debian packages are unpacked with `dpkg -x`. Idempotent; prints the
# bin dir on stdout as its last line.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.7.3}"
PROVISIONER_VERSION="${PROVISIONER_VERSION:-v6.4.0}"
SNAPSHOTTER_VERSION="${SNAPSHOTTER_VERSION:-v8.7.0}"
RESIZER_VERSION="${RESIZER_VERSION:-v2.3.0}"
# The ReferenceGrant CRD's module: the gateway-api version csi-provisioner $PROVISIONER_VERSION uses.
GATEWAY_API_VERSION="${GATEWAY_API_VERSION:-v1.6.2}"
# containernetworking-plugins: containerd reports the network ready only with a CNI config
# (a loopback-only one: pods run with hostNetwork).
DEBIAN_PACKAGES=(containerd runc busybox-static containernetworking-plugins)

CACHE="${CSI_CLONE_CACHE:-$HOME/.cache/csi-clone-conformance}"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
GO_VERSION="$(go env GOVERSION)"

log() { echo "install-k8s: $*" >&2; }

work="$(mktemp -d /tmp/csi-clone-k8s-build.XXXXXX)"
# The Go build cache is several GB and not worth keeping: only the binaries are cached.
export GOCACHE="${CSI_CLONE_GOCACHE:-$work/gocache}"
trap 'rm -rf "$work"' EXIT

# Writes a throwaway go.mod requiring MODULE@VERSION with the module's own replace lines; a
# replacement by a local path becomes the published module of the same release (LOCAL_VERSION).
throwaway_module() {
    local dir="$1" module="$2" version="$3" local_version="$4"
    mkdir -p "$dir"
    (
        cd "$dir"
        go mod init throwaway.invalid/build >/dev/null 2>&1
        go mod edit -require="$module@$version"
        local gomod
        gomod="$(go mod download -json "$module@$version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
        go mod edit -json "$gomod" | python3 -c '
import json, sys
local_version = sys.argv[1]
for r in json.load(sys.stdin).get("Replace") or []:
    old, new = r["Old"]["Path"], r["New"]
    if old.startswith("k8s.io/sample-"):
        continue  # refused by the proxy, and no command we build needs them
    target = new["Path"] + "@" + new["Version"] if new.get("Version") else old + "@" + local_version
    print(f"-replace={old}={target}")
' "$local_version" | xargs -r go mod edit
    )
}

# build NAME VERSION MODULE LOCAL_VERSION LDFLAGS PACKAGE... : cached under $CACHE/peers.
build() {
    local name="$1" version="$2" module="$3" local_version="$4" ldflags="$5"
    shift 5
    local out="$CACHE/peers/$name-$version-$GO_VERSION"
    if [[ -e "$out/.complete" ]]; then
        echo "$out"
        return
    fi
    log "building $name $version with $GO_VERSION (cold builds take minutes)"
    local started=$SECONDS
    rm -rf "$out" "$out.tmp"
    mkdir -p "$out.tmp"
    throwaway_module "$work/$name" "$module" "$version" "$local_version"
    (cd "$work/$name" && go build -trimpath -ldflags="-s -w $ldflags" -o "$out.tmp/" "$@")
    touch "$out.tmp/.complete"
    mv "$out.tmp" "$out"
    log "built $name $version in $((SECONDS - started)) s"
    echo "$out"
}

k8s_ldflags() {
    local v="$K8S_VERSION" minor date flags=""
    minor="$(cut -d. -f2 <<<"$v")"
    date="$(go list -m -json "k8s.io/kubernetes@$v" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Time"])')"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        flags+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
        flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
    done
    echo "$flags"
}

# Debian packages, unpacked (not installed) so the host's /etc and services stay untouched.
debian_tree() {
    local versions="" pkg
    for pkg in "${DEBIAN_PACKAGES[@]}"; do
        versions+="$pkg=$(apt-cache policy "$pkg" | awk '/Candidate:/ {print $2}' | tr ':~' '__')-"
    done
    local out="$CACHE/debian/${versions%-}"
    if [[ -e "$out/.complete" ]]; then
        echo "$out"
        return
    fi
    log "unpacking ${DEBIAN_PACKAGES[*]} from Debian"
    rm -rf "$out" "$out.tmp"
    mkdir -p "$out.tmp/debs"
    if ! (cd "$out.tmp/debs" && apt-get download -qq "${DEBIAN_PACKAGES[@]}" >&2); then
        apt-get update -qq >&2
        (cd "$out.tmp/debs" && apt-get download -qq "${DEBIAN_PACKAGES[@]}" >&2)
    fi
    for deb in "$out.tmp"/debs/*.deb; do
        dpkg-deb -x "$deb" "$out.tmp/root"
        dpkg-deb -f "$deb" Package Version | awk '{print $2}' | paste -sd' ' >>"$out.tmp/VERSIONS"
    done
    rm -rf "$out.tmp/debs"
    touch "$out.tmp/.complete"
    mv "$out.tmp" "$out"
    echo "$out"
}

# A docker-archive holding one busybox layer, tagged as the pod image and as the pause image
# (containerd's sandbox image is set to it; the kubelet never pulls: there is no registry).
busybox_image() {
    local busybox="$1" out="$2" dir="$work/image"
    mkdir -p "$dir/rootfs/bin" "$dir/rootfs/tmp" "$dir/rootfs/etc"
    cp "$busybox" "$dir/rootfs/bin/busybox"
    for applet in $("$busybox" --list); do
        [[ "$applet" == busybox ]] || ln -sf busybox "$dir/rootfs/bin/$applet"
    done
    echo "root:x:0:0:root:/root:/bin/sh" >"$dir/rootfs/etc/passwd"
    echo "root:x:0:" >"$dir/rootfs/etc/group"
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$dir/rootfs" -cf "$dir/layer.tar" .
    local layer_sha config config_sha
    layer_sha="$(sha256sum "$dir/layer.tar" | cut -d' ' -f1)"
    config="{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Entrypoint\":[\"/bin/sleep\",\"2147483647\"],\"Env\":[\"PATH=/bin\"]},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"sha256:$layer_sha\"]}}"
    config_sha="$(printf %s "$config" | sha256sum | cut -d' ' -f1)"
    printf %s "$config" >"$dir/$config_sha.json"
    mkdir -p "$dir/$layer_sha"
    mv "$dir/layer.tar" "$dir/$layer_sha/layer.tar"
    printf '[{"Config":"%s.json","RepoTags":["csi-clone-conformance.local/busybox:1","csi-clone-conformance.local/pause:1"],"Layers":["%s/layer.tar"]}]' \
        "$config_sha" "$layer_sha" >"$dir/manifest.json"
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$dir" \
        -cf "$out" manifest.json "$config_sha.json" "$layer_sha"
}

etcd="$(build etcd "$ETCD_VERSION" go.etcd.io/etcd/server/v3 "$ETCD_VERSION" "" go.etcd.io/etcd/server/v3)"
kube="$(build kubernetes "$K8S_VERSION" k8s.io/kubernetes "v0.${K8S_VERSION#v1.}" "$(k8s_ldflags)" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet)"
provisioner="$(build csi-provisioner "$PROVISIONER_VERSION" github.com/kubernetes-csi/external-provisioner/v6 \
    "$PROVISIONER_VERSION" "-X main.version=$PROVISIONER_VERSION" \
    github.com/kubernetes-csi/external-provisioner/v6/cmd/csi-provisioner)"
resizer="$(build csi-resizer "$RESIZER_VERSION" github.com/kubernetes-csi/external-resizer/v2 \
    "$RESIZER_VERSION" "-X main.version=$RESIZER_VERSION" \
    github.com/kubernetes-csi/external-resizer/v2/cmd/csi-resizer)"
snapshotter="$(build external-snapshotter "$SNAPSHOTTER_VERSION" github.com/kubernetes-csi/external-snapshotter/v8 \
    "$SNAPSHOTTER_VERSION" "-X main.version=$SNAPSHOTTER_VERSION" \
    github.com/kubernetes-csi/external-snapshotter/v8/cmd/snapshot-controller \
    github.com/kubernetes-csi/external-snapshotter/v8/cmd/csi-snapshotter)"
debian="$(debian_tree)"

key="k8s-$K8S_VERSION.etcd-$ETCD_VERSION.provisioner-$PROVISIONER_VERSION.snapshotter-$SNAPSHOTTER_VERSION.resizer-$RESIZER_VERSION.$GO_VERSION.$(basename "$debian" | sha256sum | cut -c1-12)"
bin="$CACHE/k8s-bin/$key"
if [[ ! -e "$bin/.complete" ]]; then
    rm -rf "$bin" "$bin.tmp"
    mkdir -p "$bin.tmp/crds" "$bin.tmp/images" "$bin.tmp/rbac" "$bin.tmp/cni"
    ln -s "$kube"/* "$provisioner"/* "$resizer"/* "$snapshotter"/* "$bin.tmp/"
    # `go build` names a /v3 module's command after the element before: server.
    ln -s "$etcd/server" "$bin.tmp/etcd"
    for tool in usr/bin/containerd usr/bin/containerd-shim-runc-v2 usr/bin/ctr usr/sbin/runc bin/busybox; do
        ln -s "$debian/root/$tool" "$bin.tmp/$(basename "$tool")"
    done
    crds="$(go mod download -json "github.com/kubernetes-csi/external-snapshotter/client/v8@$SNAPSHOTTER_VERSION" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')/config/crd"
    cp "$crds"/*storage.k8s.io_*.yaml "$bin.tmp/crds/"
    ln -s "$debian/root/usr/lib/cni/loopback" "$bin.tmp/cni/loopback"
    module_dir() { go mod download -json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'; }
    cp "$(module_dir "github.com/kubernetes-csi/external-provisioner/v6@$PROVISIONER_VERSION")/deploy/kubernetes/rbac.yaml" \
        "$bin.tmp/rbac/csi-provisioner.yaml"
    cp "$(module_dir "github.com/kubernetes-csi/external-resizer/v2@$RESIZER_VERSION")/deploy/kubernetes/rbac.yaml" \
        "$bin.tmp/rbac/csi-resizer.yaml"
    snapshotter_dir="$(module_dir "github.com/kubernetes-csi/external-snapshotter/v8@$SNAPSHOTTER_VERSION")"
    cp "$snapshotter_dir/deploy/kubernetes/csi-snapshotter/rbac-csi-snapshotter.yaml" "$bin.tmp/rbac/csi-snapshotter.yaml"
    cp "$snapshotter_dir/deploy/kubernetes/snapshot-controller/rbac-snapshot-controller.yaml" \
        "$bin.tmp/rbac/snapshot-controller.yaml"
    busybox_image "$debian/root/bin/busybox" "$bin.tmp/images/busybox.tar"
    {
        echo "kubernetes $K8S_VERSION"
        echo "etcd $ETCD_VERSION"
        echo "csi-provisioner $PROVISIONER_VERSION"
        echo "csi-resizer $RESIZER_VERSION"
        echo "external-snapshotter $SNAPSHOTTER_VERSION"
        echo "go $GO_VERSION"
        cat "$debian/VERSIONS"
    } >"$bin.tmp/VERSIONS"
    touch "$bin.tmp/.complete"
    mv "$bin.tmp" "$bin"
fi
# The ReferenceGrant CRD, for cross-namespace clones (--feature-gates=CrossNamespaceVolumeDataSource=true);
# added beside the snapshot CRDs when missing, so a cache made before it needs no rebuild.
grants="$bin/crds/gateway.networking.k8s.io_referencegrants.yaml"
if [[ ! -e "$grants" ]]; then
    gateway="$(go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
    cp "$gateway/config/crd/standard/gateway.networking.k8s.io_referencegrants.yaml" "$grants.tmp"
    mv "$grants.tmp" "$grants"
fi
ln -sfn "$key" "$CACHE/k8s-bin/current"
log "peers in $bin"
echo "$bin"
