#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for tests/test_slurm.py.
#
#   cluster.sh install   apt-get the Debian packages (slurmctld, slurmd, slurm-client,
#                        munge) where they are missing; exit 3 if that cannot be done
#   cluster.sh up        write /etc/slurm/{slurm,gres}.conf, start munged, slurmctld -D
#                        and slurmd -D in the background, wait for the node to be idle;
#                        prints the daemons' PIDs (also in $STATE/pids)
#   cluster.sh down      cancel the cluster's jobs, stop the daemons by PID
#
# No systemd, docker or accounting database: munged gets its own socket under
# $STATE, the node one fake GPU (gres on /dev/null). The config must live at
# /etc/slurm/slurm.conf: the executor's job step clears SLURM_* before its inner
# srun, so a SLURM_CONF elsewhere is not seen. `up` is idempotent: it first
# stops whatever an earlier `up` left running. It refuses to overwrite a
# slurm.conf it did not write. Needs root.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
STATE="${BOLTZBENCH_SLURM_STATE:-/tmp/boltzbench-slurm}"
CONF_DIR=/etc/slurm
MARKER="# boltzbench test cluster"
PACKAGES=(slurmctld slurmd slurm-client munge)
BINARIES=(slurmctld slurmd munged sbatch squeue srun scontrol sinfo scancel)
export PATH="$PATH:/usr/sbin:/sbin"

log() { echo "cluster.sh: $*" >&2; }

have_binaries() {
    local b
    for b in "${BINARIES[@]}"; do command -v "$b" >/dev/null || return 1; done
}

cmd_install() {
    have_binaries && return 0
    if ! command -v apt-get >/dev/null; then
        log "apt-get unavailable; cannot install ${PACKAGES[*]}"
        exit 3
    fi
    if [ "$(id -u)" != 0 ]; then
        log "not root; cannot apt-get install ${PACKAGES[*]}"
        exit 3
    fi
    log "installing ${PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Keep the packages' init scripts from starting system daemons (on a host
    # with systemd they would outlive the tests): the test cluster starts its own.
    local policy=/usr/sbin/policy-rc.d added=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added=1
    fi
    local rc=0
    timeout 600 apt-get update -qq &&
        timeout 900 apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null ||
        rc=$?
    [ -n "$added" ] && rm -f "$policy"
    [ "$rc" = 0 ] && have_binaries
}

# kill PID gracefully, then for good; never by name
stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
}

cmd_down() {
    [ -f "$STATE/pids" ] || return 0
    # jobs first (their steps are not children of slurmd), while slurmctld lives
    if command -v scancel >/dev/null && [ -f "$CONF_DIR/slurm.conf" ]; then
        timeout 10 scancel --user="$(id -un)" 2>/dev/null || true
        local i
        for i in $(seq 30); do
            [ -z "$(timeout 5 squeue -h -t R,CG,PD -o %i 2>/dev/null)" ] && break
            sleep 0.5
        done
    fi
    local name pid
    # slurmd, then slurmctld, then munged (reverse of start order)
    tac "$STATE/pids" | while read -r name pid; do
        stop_pid "$pid"
        log "stopped $name ($pid)"
    done
    rm -f "$STATE/pids"
}

render() { # template -> file, substituting the @NAMES@
    sed -e "s|@HOST@|$HOST|g" -e "s|@STATE@|$STATE|g" -e "s|@CPUS@|$CPUS|g" \
        -e "s|@MEM_MB@|$MEM_MB|g" -e "s|@CTLD_PORT@|$CTLD_PORT|g" \
        -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" "$1" >"$2"
}

start() { # name, command...: run in the background in its own session, record the PID
    local name=$1
    shift
    setsid "$@" >"$STATE/$name.out" 2>&1 </dev/null &
    echo "$name $!" >>"$STATE/pids"
}

wait_for() { # seconds, description, command...: poll until the command succeeds
    local secs=$1 what=$2 i
    shift 2
    for i in $(seq $((secs * 2))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    log "timed out after ${secs}s waiting for $what"
    tail -n 20 "$STATE"/*.log "$STATE"/*.out >&2 2>/dev/null || true
    return 1
}

node_idle() {
    [ "$(timeout 5 sinfo -h -n "$HOST" -o %t 2>/dev/null)" = idle ]
}

cmd_up() {
    [ "$(id -u)" = 0 ] || { log "needs root"; exit 1; }
    have_binaries || { log "SLURM binaries missing; run '$0 install'"; exit 1; }
    if [ -f "$CONF_DIR/slurm.conf" ] && ! grep -q "^$MARKER" "$CONF_DIR/slurm.conf"; then
        log "$CONF_DIR/slurm.conf exists and was not written by $0; not touching it"
        exit 1
    fi
    cmd_down
    HOST="$(hostname -s)"
    CPUS="$(nproc)"
    # Three quarters of the memory, and at least 16 GB: memory is not enforced
    # here (no cgroups), and the floor lets the workflow's per-rule requests
    # (profiles/default) be scheduled on a small machine.
    MEM_MB=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) * 3 / 4 / 1024))
    MEM_MB=$((MEM_MB > 16384 ? MEM_MB : 16384))
    CTLD_PORT="${BOLTZBENCH_SLURMCTLD_PORT:-16817}"
    SLURMD_PORT="${BOLTZBENCH_SLURMD_PORT:-16818}"

    rm -rf "$STATE"
    mkdir -p "$STATE"/{munge,ctld,slurmd} "$CONF_DIR"
    chmod 755 "$STATE" "$STATE/munge" # the socket directory must be world-executable
    render "$HERE/slurm.conf.in" "$CONF_DIR/slurm.conf"
    render "$HERE/gres.conf.in" "$CONF_DIR/gres.conf"

    dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
    chmod 600 "$STATE/munge/munge.key"
    start munged munged --foreground --force --socket="$STATE/munge/munge.socket.2" \
        --key-file="$STATE/munge/munge.key" --pid-file="$STATE/munge/munged.pid" \
        --log-file="$STATE/munge/munged.log" --seed-file="$STATE/munge/munged.seed"
    wait_for 20 munged test -S "$STATE/munge/munge.socket.2"
    start slurmctld slurmctld -D -i
    wait_for 30 slurmctld timeout 5 scontrol ping
    start slurmd slurmd -D
    wait_for 60 "node $HOST idle" node_idle
    log "up: $(tr '\n' ' ' <"$STATE/pids")"
    cat "$STATE/pids"
}

case "${1:-}" in
install) cmd_install ;;
up) cmd_up ;;
down) cmd_down ;;
*)
    echo "usage: $0 install|up|down   (state in \$BOLTZBENCH_SLURM_STATE, default $STATE)" >&2
    exit 2
    ;;
esac
