#!/usr/bin/env bash
# local-slurm.sh — bring up a real single-node SLURM (22.05, Debian 12) for development and CI.
#
# Usage: local-slurm.sh [start|stop|restart|status]     (default: start)
#
#   start    install packages if missing, start munged, write /etc/slurm/slurm.conf (only if its
#            content differs), start slurmctld + slurmd (restart them if the conf changed or the
#            running slurmctld is of another cluster), wait until the node is usable
#            (idle/mixed/allocated), resuming it if down/drained. Comes up from any prior state:
#            it keeps its own state in /var/spool/fastntk-local-slurm, cleared if it was saved
#            by a cluster of another name. Idempotent: a second run with everything up takes
#            about a second.
#   stop     cancel the jobs of this local cluster, then stop slurmd, slurmctld and munged.
#   restart  stop, then start.
#   status   print sinfo and squeue.
#
# Environment:
#   LOCAL_SLURM_CPUS     CPUs to advertise (default: max(8, nproc)); more than the machine has
#                        lets several one-core jobs run at once.
#   LOCAL_SLURM_TIMEOUT  seconds to wait for the node to become usable (default 60).
#
# Needs root and no systemd (daemons are started directly). See slurm/README.md.
set -euo pipefail

PROG=local-slurm
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
LOG_DIR=/var/log/slurm
# Its own state directories (not Debian's /var/spool/slurmctld): state another SLURM left there
# (e.g. of a cluster with another ClusterName, which slurmctld refuses) is never read.
STATE_DIR=/var/spool/fastntk-local-slurm
CTLD_SPOOL=$STATE_DIR/slurmctld
SLURMD_SPOOL=$STATE_DIR/slurmd
CLUSTER_NAME=localcluster
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_RUN=/run/munge
MUNGE_KEY=/etc/munge/munge.key
PACKAGES=(slurmctld slurmd slurm-client munge)
TIMEOUT=${LOCAL_SLURM_TIMEOUT:-60}
PARTITION=debug

T0=$(date +%s.%N)

log() { echo "$PROG: $*" >&2; }
die() {
    echo "$PROG: ERROR: $*" >&2
    exit 1
}
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }

# Print the last lines of a log file to stderr (for failure messages).
tail_log() {
    local f=$1
    if [[ -s $f ]]; then
        echo "---- last lines of $f ----" >&2
        tail -n 15 "$f" >&2 || true
    fi
}

# pid of a running daemon: from its pid file if that process is alive and has the right name,
# else from pidof (exact program name). Prints nothing if not running.
daemon_pid() {
    local name=$1 pidfile=${2:-} pid=""
    if [[ -n $pidfile && -r $pidfile ]]; then
        pid=$(tr -dc '0-9' <"$pidfile" || true)
        if [[ -n $pid && -r /proc/$pid/comm && $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]]; then
            echo "$pid"
            return 0
        fi
    fi
    pidof -s "$name" 2>/dev/null || true
}

# Stop one daemon by its pid (SIGTERM, then SIGKILL after 15 s).
stop_daemon() {
    local name=$1 pidfile=$2 pid i
    pid=$(daemon_pid "$name" "$pidfile")
    [[ -z $pid ]] && return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
        kill -0 "$pid" 2>/dev/null || { log "stopped $name (pid $pid)"; return 0; }
        sleep 0.1
    done
    log "$name (pid $pid) did not exit on SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.2
}

need_root() { [[ $(id -u) -eq 0 ]] || die "must run as root"; }

# ---------------------------------------------------------------------------------------------
install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$p")
        fi
    done
    ((${#missing[@]} == 0)) && return 0
    log "installing packages: ${missing[*]} (about 15 s)"
    local out
    out=$(mktemp)
    if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \
        --no-install-recommends "${PACKAGES[@]}"; } >"$out" 2>&1; then
        tail -n 20 "$out" >&2
        rm -f "$out"
        die "apt-get install of ${PACKAGES[*]} failed"
    fi
    rm -f "$out"
    CHANGED+=("packages")
}

start_munge() {
    install -d -o munge -g munge -m 0755 "$MUNGE_RUN"
    local d
    for d in /etc/munge /var/lib/munge /var/log/munge; do
        [[ -d $d ]] || install -d -o munge -g munge -m 0700 "$d"
    done
    if [[ ! -s $MUNGE_KEY ]]; then
        log "creating munge key $MUNGE_KEY"
        mungekey --create --keyfile="$MUNGE_KEY" >/dev/null 2>&1 || die "mungekey --create failed"
        CHANGED+=("munge-key")
    fi
    chown munge:munge "$MUNGE_KEY"
    chmod 0600 "$MUNGE_KEY"

    if [[ -z $(daemon_pid munged "$MUNGE_RUN/munged.pid") ]]; then
        log "starting munged"
        runuser -u munge -- /usr/sbin/munged || {
            tail_log /var/log/munge/munged.log
            die "munged failed to start"
        }
        CHANGED+=("munged")
    fi
    local i
    for ((i = 0; i < 50; i++)); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    tail_log /var/log/munge/munged.log
    die "munge check failed: 'munge -n | unmunge' does not work"
}

# Compute the desired slurm.conf and write it only if it differs. Sets CONF_CHANGED=1 if written.
write_conf() {
    local host hw real_mem nproc_n cpus def_mem
    host=$(hostname -s)
    [[ -n $host ]] || die "hostname -s is empty"
    hw=$(slurmd -C 2>/dev/null | head -n 1) || true
    real_mem=$(sed -n 's/.*RealMemory=\([0-9]\+\).*/\1/p' <<<"$hw")
    [[ -n $real_mem && $real_mem -gt 0 ]] || die "could not read RealMemory from 'slurmd -C' (got: $hw)"
    nproc_n=$(nproc)
    if [[ -n ${LOCAL_SLURM_CPUS:-} ]]; then
        [[ $LOCAL_SLURM_CPUS =~ ^[1-9][0-9]*$ ]] || die "LOCAL_SLURM_CPUS must be a positive integer"
        cpus=$LOCAL_SLURM_CPUS
    else
        cpus=$((nproc_n > 8 ? nproc_n : 8))
    fi
    def_mem=$((real_mem / cpus))
    NODE=$host CPUS=$cpus REAL_MEM=$real_mem DEF_MEM=$def_mem

    install -d -m 0755 "$CONF_DIR" "$LOG_DIR" "$CTLD_SPOOL" "$SLURMD_SPOOL"

    local new
    new=$(mktemp)
    cat >"$new" <<EOF
# Written by slurm/local-slurm.sh — single-node development/CI cluster. Rewritten when it differs.
ClusterName=${CLUSTER_NAME}
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=${def_mem}
MailProg=/bin/true
ReturnToService=2
SlurmdParameters=config_overrides
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=${CTLD_SPOOL}
SlurmdSpoolDir=${SLURMD_SPOOL}
SlurmctldPidFile=${CTLD_PID}
SlurmdPidFile=${SLURMD_PID}
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SchedulerType=sched/backfill
SlurmctldTimeout=120
SlurmdTimeout=300
InactiveLimit=0
MinJobAge=300
KillWait=30
Waittime=0

NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${real_mem} State=UNKNOWN
PartitionName=${PARTITION} Nodes=${host} Default=YES MaxTime=INFINITE State=UP
EOF
    if [[ -f $CONF ]] && cmp -s "$new" "$CONF"; then
        rm -f "$new"
        CONF_CHANGED=0
    else
        [[ -f $CONF ]] && cp -p "$CONF" "$CONF.bak"
        install -m 0644 "$new" "$CONF"
        rm -f "$new"
        CONF_CHANGED=1
        CHANGED+=("slurm.conf")
        log "wrote $CONF (CPUs=$cpus RealMemory=$real_mem DefMemPerCPU=$def_mem)"
    fi
}

# The ClusterName of the running slurmctld (empty if it does not answer).
running_cluster() {
    timeout 5 scontrol show config 2>/dev/null | sed -n 's/^ClusterName *= *//p' | head -n 1
}

# Our state directory must belong to CLUSTER_NAME: slurmctld refuses to start on state saved
# by a cluster of another name ("CLUSTER NAME MISMATCH"). It is a development cluster's state:
# clear it rather than fail.
clean_foreign_state() {
    local f=$CTLD_SPOOL/clustername saved
    [[ -f $f ]] || return 0
    saved=$(tr -d '[:space:]' <"$f")
    [[ $saved == "$CLUSTER_NAME" ]] && return 0
    log "state in $CTLD_SPOOL is from cluster '$saved', not '$CLUSTER_NAME'; clearing it"
    find "$CTLD_SPOOL" "$SLURMD_SPOOL" -mindepth 1 -delete
    CHANGED+=("state-cleared")
}

start_slurm_daemons() {
    local running restart=$CONF_CHANGED
    if ((restart)); then
        # Node/partition changes need a real restart, not 'scontrol reconfigure'.
        if [[ -n $(daemon_pid slurmd "$SLURMD_PID") || -n $(daemon_pid slurmctld "$CTLD_PID") ]]; then
            log "slurm.conf changed; restarting daemons"
        fi
    elif [[ -n $(daemon_pid slurmctld "$CTLD_PID") ]]; then
        # A slurmctld of another configuration (another cluster, started by hand or by an
        # older setup) must not be taken for ours.
        running=$(running_cluster || true)
        if [[ $running != "$CLUSTER_NAME" ]]; then
            log "the running slurmctld is of cluster '${running:-no answer}', not '$CLUSTER_NAME'; restarting the daemons"
            restart=1
        fi
    fi
    if ((restart)); then
        stop_daemon slurmd "$SLURMD_PID"
        stop_daemon slurmctld "$CTLD_PID"
    fi
    if [[ -z $(daemon_pid slurmctld "$CTLD_PID") ]]; then
        clean_foreign_state
        log "starting slurmctld"
        /usr/sbin/slurmctld || {
            tail_log "$LOG_DIR/slurmctld.log"
            die "slurmctld failed to start"
        }
        CHANGED+=("slurmctld")
    fi
    local spid
    spid=$(daemon_pid slurmd "$SLURMD_PID")
    if [[ -n $spid && " ${CHANGED[*]} " == *" slurmctld "* ]]; then
        # slurmctld was (re)started under a running slurmd: the node stays 'unknown' until slurmd
        # re-registers (several seconds); SIGHUP makes it re-register at once.
        kill -HUP "$spid" 2>/dev/null || true
    fi
    if [[ -z $spid ]]; then
        log "starting slurmd"
        SLURMD_STARTED_AT=$(date +%s)
        /usr/sbin/slurmd || {
            tail_log "$LOG_DIR/slurmd.log"
            die "slurmd failed to start"
        }
        CHANGED+=("slurmd")
    fi
}

# True if slurmctld reports a SlurmdStartTime at or after SLURMD_STARTED_AT (epoch seconds).
slurmd_registered() {
    local t epoch
    t=$(timeout 5 scontrol show node "$NODE" 2>/dev/null | sed -n 's/.*SlurmdStartTime=\([^ ]*\).*/\1/p')
    [[ -n $t && $t != None && $t != Unknown ]] || return 1
    epoch=$(date -d "$t" +%s 2>/dev/null) || return 0 # unparsable: do not block on it
    ((epoch >= SLURMD_STARTED_AT - 1))
}

# Wait until the node is idle/mixed/allocated; resume it if down/drained. Sets NODE_STATE.
wait_for_node() {
    local deadline state resumed=0
    deadline=$(($(date +%s) + TIMEOUT))
    while :; do
        # Daemons must still be alive.
        [[ -n $(daemon_pid slurmctld "$CTLD_PID") ]] || {
            tail_log "$LOG_DIR/slurmctld.log"
            die "slurmctld exited while waiting for the node"
        }
        [[ -n $(daemon_pid slurmd "$SLURMD_PID") ]] || {
            tail_log "$LOG_DIR/slurmd.log"
            die "slurmd exited while waiting for the node"
        }
        state=""
        if timeout 5 scontrol ping >/dev/null 2>&1; then
            state=$(timeout 5 sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n 1 || true)
        fi
        # If slurmd was (re)started by this run, the saved state may say idle before slurmd has
        # registered: also require its SlurmdStartTime to be from this run.
        if [[ -n $state && -n $SLURMD_STARTED_AT ]] && ! slurmd_registered; then
            state="$state (slurmd not registered yet)"
        fi
        case $state in
            idle | mixed | allocated | completing | idle+* | mixed+* | allocated+*)
                NODE_STATE=$state
                return 0
                ;;
            down | drained | draining | drain* | down+* | *drain*)
                # Not responding states end in '*' and are handled below (they cannot be resumed).
                if ((resumed < 3)); then
                    log "node $NODE is $state; resuming it"
                    timeout 5 scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
                    resumed=$((resumed + 1))
                fi
                ;;
        esac
        if (($(date +%s) >= deadline)); then
            timeout 5 sinfo -N -l >&2 2>/dev/null || true
            timeout 5 scontrol show node "$NODE" 2>/dev/null | grep -E 'State|Reason' >&2 || true
            tail_log "$LOG_DIR/slurmctld.log"
            tail_log "$LOG_DIR/slurmd.log"
            die "node $NODE not usable after ${TIMEOUT}s (state: '${state:-no answer from slurmctld}')"
        fi
        sleep 0.5
    done
}

cmd_start() {
    need_root
    CHANGED=()
    CONF_CHANGED=0
    SLURMD_STARTED_AT=""
    install_packages
    start_munge
    write_conf
    start_slurm_daemons
    wait_for_node
    local what="already up"
    ((${#CHANGED[@]})) && what="started/changed: ${CHANGED[*]}"
    echo "$PROG: OK node=$NODE state=$NODE_STATE partition=$PARTITION CPUs=$CPUS" \
        "RealMemory=${REAL_MEM}M DefMemPerCPU=${DEF_MEM}M ($what) in $(elapsed)s"
}

cmd_stop() {
    need_root
    # the local cluster's jobs end with it: a job left running (a dask-jobqueue worker whose
    # client went away) would outlive its slurmd as an orphan process
    if command -v scancel >/dev/null 2>&1 && [[ -f "$CTLD_PID" ]] \
            && kill -0 "$(cat "$CTLD_PID" 2>/dev/null)" 2>/dev/null; then
        scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
        for _ in $(seq 1 20); do
            [[ -z "$(squeue -h -u "$(id -un)" 2>/dev/null)" ]] && break
            sleep 0.25
        done
    fi
    # proctrack/linuxproc loses a job's processes once they are reparented (a dask worker
    # still closing when its job step ended): end every process of this cluster's jobs
    local p
    for p in /proc/[0-9]*; do
        [[ ${p#/proc/} == "$$" ]] && continue
        if { tr '\0' '\n' < "$p/environ"; } 2>/dev/null \
                | grep -qx "SLURM_CLUSTER_NAME=$CLUSTER_NAME"; then
            kill -KILL "${p#/proc/}" 2>/dev/null \
                && log "ended process ${p#/proc/}, left over from a job of this cluster"
        fi
    done
    stop_daemon slurmd "$SLURMD_PID"
    stop_daemon slurmctld "$CTLD_PID"
    stop_daemon munged "$MUNGE_RUN/munged.pid"
    echo "$PROG: stopped slurmd, slurmctld, munged in $(elapsed)s"
}

cmd_status() {
    command -v sinfo >/dev/null || die "SLURM client not installed (run: $0 start)"
    local d rc=0
    for d in munged slurmctld slurmd; do
        local pf
        case $d in
            munged) pf=$MUNGE_RUN/munged.pid ;;
            slurmctld) pf=$CTLD_PID ;;
            slurmd) pf=$SLURMD_PID ;;
        esac
        local pid
        pid=$(daemon_pid "$d" "$pf")
        if [[ -n $pid ]]; then
            printf '%-10s running (pid %s)\n' "$d" "$pid"
        else
            printf '%-10s not running\n' "$d"
            rc=1
        fi
    done
    sinfo || rc=1
    squeue || rc=1
    return $rc
}

case ${1:-start} in
    start | up) cmd_start ;;
    stop | down) cmd_stop ;;
    restart)
        cmd_stop
        T0=$(date +%s.%N)
        cmd_start
        ;;
    status) cmd_status ;;
    -h | --help | help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' ;;
    *) die "unknown command '$1' (use start, stop, restart or status)" ;;
esac
