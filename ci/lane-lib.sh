#!/usr/bin/env bash
# Shared by the CI lanes (source it): a temp dir that is the lane's own, and an EXIT trap that
# gives the host back. The trap stops only processes the lane started (by pid, checked to be
# our child with the start time recorded), unmounts only mount points under the lane's temp
# dir, detaches only loop devices whose backing file is under it, and removes the temp dir
# without crossing into any mount. Every wait has a deadline.

# lane_tmp NAME [SHORT]: creates the lane's temp dir /var/tmp/SHORT.XXXXXX (the harness's
# default place; keep SHORT short when unix sockets live below it, their paths are limited
# to 107 bytes) and installs the trap. Sets LANE_TMP.
lane_tmp() {
    LANE_NAME="$1"
    LANE_TMP="$(mktemp -d "/var/tmp/${2:-$1}.XXXXXX")"
    LANE_PIDS=()
    trap lane_restore EXIT
    # A signal ends the script through its EXIT trap (bash alone would skip it).
    # `timeout` and a terminal signal the whole process group: the lane's children got the
    # signal too and are cleaning up, so the trap lets them finish instead of signalling again
    # (a second signal makes the harness stop its cleanup at once).
    LANE_SIGNALLED=""
    trap 'exit 130' INT # background jobs of a script ignore SIGINT: they are sent SIGTERM
    trap 'LANE_SIGNALLED=1; exit 143' TERM
    trap 'LANE_SIGNALLED=1; exit 129' HUP
}

# lane_run LOG COMMAND...: runs COMMAND tracked (so the trap can stop it), its output to LOG
# and to stdout; returns its exit status.
lane_run() {
    local log="$1" pid rc=0
    shift
    # tee ignores the signals: it must outlive COMMAND's clean-up, whose output it carries
    # (a writer whose pipe closed dies of SIGPIPE or fails mid-cleanup).
    "$@" > >(trap '' INT TERM HUP && exec tee "$log") 2>&1 &
    pid=$!
    lane_track "$pid"
    wait "$pid" || rc=$?
    return "$rc"
}

# lane_stat PID N: field N of /proc/PID/stat counted from the state (1 state, 2 parent pid,
# 20 start time in clock ticks since boot); the command name before it may hold spaces.
lane_stat() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    awk -v n="$2" '{print $n}' <<<"$stat"
}

lane_start_time() { lane_stat "$1" 20; }

# lane_track PID: remember a background process the lane started, with its start time.
lane_track() {
    LANE_PIDS+=("$1:$(lane_start_time "$1")")
}

# lane_stop PID:START GRACE: SIGTERM, SIGKILL after GRACE seconds, only while the pid is
# still the process we started (same start time, our child). Never waits without bound: a
# process stuck in the kernel (D state) survives SIGKILL, and is then reported, not waited for.
lane_stop() {
    local pid="${1%%:*}" start="${1#*:}" grace="$2"
    if lane_is "$pid" "$start"; then
        [[ -n "${LANE_SIGNALLED:-}" ]] || kill -TERM "$pid" 2>/dev/null || true
        if ! lane_wait_gone "$pid" "$start" $((grace * 10)); then
            kill -KILL "$pid" 2>/dev/null || true
            if ! lane_wait_gone "$pid" "$start" 100; then
                echo "$LANE_NAME: pid $pid did not exit 10 s after SIGKILL (stuck in the kernel?)" >&2
                return 0
            fi
        fi
    fi
    # Gone or a zombie: reaping it cannot block.
    wait "$pid" 2>/dev/null || true
}

# lane_wait_gone PID START TENTHS: waits up to TENTHS tenths of a second for it to end.
lane_wait_gone() {
    local n=0
    while lane_is "$1" "$2"; do
        ((n >= $3)) && return 1
        sleep 0.1
        n=$((n + 1))
    done
    return 0
}

# lane_is PID START: the pid is still our running child started at START.
lane_is() {
    [[ -n "$2" && "$(lane_stat "$1" 20)" == "$2" && "$(lane_stat "$1" 2)" == "$$" ]] &&
        [[ "$(lane_stat "$1" 1)" != Z ]]
}

# lane_unmount_under DIR: unmounts every mount point under DIR, deepest first.
lane_unmount_under() {
    local dir="$1" mnt
    [[ -n "$dir" && -d "$dir" ]] || return 0
    while IFS= read -r mnt; do
        timeout 30 umount "$mnt" 2>/dev/null || timeout 30 umount -l "$mnt" 2>/dev/null ||
            echo "$LANE_NAME: could not unmount $mnt" >&2
    done < <(findmnt -rn -o TARGET 2>/dev/null | awk -v p="$dir/" 'index($0, p) == 1 { print length($0) "\t" $0 }' |
        sort -rn | cut -f2-)
}

# lane_detach_loops_under DIR: detaches loop devices whose backing file lies under DIR (also
# when the file is already deleted).
lane_detach_loops_under() {
    local dir="$1" dev back
    [[ -n "$dir" ]] || return 0
    while read -r dev back; do
        back="${back% (deleted)}"
        if [[ "$back" == "$dir/"* ]]; then
            timeout 30 losetup -d "$dev" 2>/dev/null || echo "$LANE_NAME: could not detach $dev ($back)" >&2
        fi
    done < <(timeout 30 losetup -l -n -O NAME,BACK-FILE 2>/dev/null)
}

# lane_remove_tmp: removes the temp dir, only once nothing is mounted below it.
lane_remove_tmp() {
    local dir="$LANE_TMP"
    [[ -n "$dir" && -d "$dir" ]] || return 0
    if findmnt -rn -o TARGET | awk -v p="$dir/" 'index($0, p) == 1 { found = 1 } END { exit !found }'; then
        echo "$LANE_NAME: $dir still has mounts below it; kept" >&2
        return 0
    fi
    timeout 120 rm -rf --one-file-system "$dir" || echo "$LANE_NAME: could not remove $dir" >&2
}

# The EXIT trap: processes first (they hold the mounts), then mounts, loops, the dir.
lane_restore() {
    local status=$? entry
    trap - EXIT INT TERM HUP
    for entry in "${LANE_PIDS[@]}"; do
        lane_stop "$entry" "${LANE_STOP_GRACE:-60}"
    done
    lane_unmount_under "$LANE_TMP"
    lane_detach_loops_under "$LANE_TMP"
    lane_remove_tmp
    exit "$status"
}
