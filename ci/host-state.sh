#!/usr/bin/env bash
# Prints what a local-cluster run may change on the host, one fact per line, so CI can diff the
# state before and after a run: the sysctls the kubelet sets, mounts, loop devices, the host
# paths the stack creates, and processes of the stack's binaries. Also any block filesystem
# found frozen (it is thawed) and any process stuck in D state: those lines carry a time
# stamp, so a before/after diff that meets one always fails. Nothing else varies between two
# reports on an unchanged host.
set -u
here="$(cd "$(dirname "$0")" && pwd)"
for key in vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops \
    kernel/keys/root_maxkeys kernel/keys/root_maxbytes; do
    echo "sysctl $key=$(cat "/proc/sys/$key" 2>/dev/null)"
done
awk '{print "mount " $5 " " $9}' /proc/self/mountinfo | sort
for f in /sys/block/loop*/loop/backing_file; do
    [[ -e "$f" ]] && echo "loop $(basename "$(dirname "$(dirname "$f")")") $(cat "$f")"
done
for path in /var/lib/kubelet /var/log/containers /var/log/pods /run/containerd /var/lib/containerd \
    /var/lib/cni /run/netns /etc/cni /opt/cni /opt/containerd /usr/libexec/kubernetes /etc/kubernetes; do
    [[ -e "$path" ]] && echo "path $path"
done
# Every binary of the stack runs from the peer cache (Debian ones included), or is the driver.
cache="${CSI_CLONE_CACHE:-$HOME/.cache/csi-clone-conformance}"
for exe in /proc/[0-9]*/exe; do
    target="$(readlink "$exe" 2>/dev/null)" || continue
    case "$target" in
    "$cache"/* | */reference-driver) echo "process $target" ;;
    esac
done | sort -u
timeout 30 python3 "$here/freeze-watchdog.py" check ||
    echo "host-state: the freeze check did not finish ($(date -u +%FT%TZ))"
exit 0
