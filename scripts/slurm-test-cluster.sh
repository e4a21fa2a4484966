#!/usr/bin/env bash
# A throwaway Slurm cluster on this one machine, for energybench's `slurm` tests and CI.
#
#   scripts/slurm-test-cluster.sh start | stop | status
#
# Needs root and Debian/Ubuntu (apt-get). `start` installs slurm-wlm, munge, slurmdbd and
# mariadb-server if missing, then starts munged, mariadbd, slurmdbd, slurmctld and two slurmd (nodes
# n1 and n2, each declaring 4 CPUs and 4 GPUs through gres.conf with dummy device files, so Slurm sets
# CUDA_VISIBLE_DEVICES without GPU hardware) in partition `debug`. Accounting (slurmdbd) is on because
# submitit learns the end state of a job that died without a result from sacct. Every step is
# idempotent: `start` on a running cluster only checks it. Nothing is started through systemd.
# Files: /etc/slurm/{slurm,gres,slurmdbd}.conf (refused if they exist and were not written here),
# a marked line "n1 n2" in /etc/hosts, state under /var/spool/energybench-slurm, logs under
# /var/log/energybench-slurm, pid files under /run/energybench-slurm. `stop` ends the daemons this
# script started (by their pid files) and removes the /etc/hosts line; packages and files stay.
set -euo pipefail

CLUSTER=energybench
PARTITION=debug
NODES=(n1 n2)
MARK="# energybench test cluster (scripts/slurm-test-cluster.sh): throwaway, rewritten at will"
ETC=/etc/slurm
SPOOL=/var/spool/energybench-slurm
LOGS=/var/log/energybench-slurm
RUN=/run/energybench-slurm
DB_PASS=energybench-test
PACKAGES=(slurm-wlm munge slurmdbd mariadb-server)

# shellcheck source=slurm-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/slurm-common.sh"
trap '' PIPE  # a closed stdout (start | head) must not kill a half-done start
die() { echo "slurm-test-cluster: error: $*" >&2; exit 1; }
say() { echo "slurm-test-cluster: $*" 2>/dev/null || true; }

pidfile() { # pidfile <daemon>: where it writes its pid (munged and mariadbd run as their own users)
    case $1 in
        munged) echo /run/munge/munged.pid ;;
        mariadbd) echo /run/mysqld/mariadbd.pid ;;
        *) echo "$RUN/$1.pid" ;;
    esac
}

alive() { # alive <daemon>: the process named in its pid file runs
    local f
    f=$(pidfile "$1")
    [[ -s $f ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

preconditions() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (it installs Debian packages and starts system daemons); try: sudo $0 ${1:-start}"
    local missing=()
    for cmd in slurmctld slurmd slurmdbd sacctmgr munged mariadbd; do
        command -v "$cmd" >/dev/null || missing+=("$cmd")
    done
    if ((${#missing[@]})); then
        command -v apt-get >/dev/null || die "${missing[*]} not installed and no apt-get here; install Slurm (22.05+), munge, slurmdbd and MariaDB by hand"
        say "installing ${PACKAGES[*]} (missing: ${missing[*]})"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${PACKAGES[@]}" >/dev/null \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${PACKAGES[@]}" >/dev/null; } \
            || die "apt-get install ${PACKAGES[*]} failed"
    fi
    for i in 0 1 2 3; do  # the dummy GPUs: character devices, whose minor numbers Slurm reports
        [[ -c /dev/tty$i ]] || die "/dev/tty$i is missing; the test cluster declares /dev/tty[0-3] as its GPUs"
    done
    for f in slurm.conf gres.conf slurmdbd.conf; do
        if [[ -e $ETC/$f ]] && ! grep -qF "$MARK" "$ETC/$f"; then
            die "$ETC/$f exists and was not written by this script; refusing to replace a real Slurm configuration"
        fi
    done
}

config_hash() { cat "$ETC/slurm.conf" "$ETC/gres.conf" | sha256sum | cut -d" " -f1; }

write_configs() {
    local host
    host=$(hostname -s)
    mkdir -p "$ETC" "$SPOOL/ctld" "$LOGS" "$RUN"
    for n in "${NODES[@]}"; do mkdir -p "$SPOOL/d-$n"; done
    cat >"$ETC/slurm.conf" <<EOF
$MARK
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
$(slurm_conf_common)
NodeName=n[1-2] NodeHostname=$host NodeAddr=127.0.0.1 Port=[17001-17002] CPUs=4 RealMemory=4000 Gres=gpu:4 State=UNKNOWN
PartitionName=$PARTITION Nodes=n[1-2] Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$ETC/gres.conf" <<EOF
$MARK
# no GPU hardware: dummy device files, so Slurm allocates "GPUs" and sets CUDA_VISIBLE_DEVICES
AutoDetect=off
NodeName=n[1-2] Name=gpu File=/dev/tty[0-3]
EOF
    cat >"$ETC/slurmdbd.conf" <<EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=$LOGS/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$ETC/slurmdbd.conf"
    # daemons started from another configuration (this script changed, or an earlier start died) restart
    if alive slurmctld && [[ $(config_hash) != "$(cat "$RUN/config.sha256" 2>/dev/null)" ]]; then
        say "configuration changed: restarting slurmctld and slurmd"
        stop_daemons "${NODES[@]/#/slurmd-}" slurmctld
    fi
    if ! grep -q "energybench-test-cluster" /etc/hosts; then
        echo "127.0.0.1 ${NODES[*]} # energybench-test-cluster" >>/etc/hosts
    fi
}

start_munge() {
    [[ -s /etc/munge/munge.key ]] || { mungekey --create --force 2>/dev/null || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none; }
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge && chown munge:munge /run/munge /var/log/munge /var/lib/munge
    if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
        runuser -u munge -- munged --pid-file="$(pidfile munged)"
        wait_for 10 munged bash -c "munge -n | unmunge"
    fi
}

start_mariadb() {
    if ! mysqladmin --protocol=socket ping >/dev/null 2>&1; then
        [[ -d /var/lib/mysql/mysql ]] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
        mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
        setsid mariadbd --user=mysql --datadir=/var/lib/mysql --socket=/run/mysqld/mysqld.sock \
            --pid-file="$(pidfile mariadbd)" --skip-networking=0 --bind-address=127.0.0.1 \
            >>"$LOGS/mariadbd.log" 2>&1 </dev/null &
        wait_for 30 mariadbd mysqladmin --protocol=socket ping
    fi
    mysql --protocol=socket -u root <<EOF
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
EOF
}

start_slurm() {
    alive slurmdbd || slurmdbd
    wait_for 30 slurmdbd sacctmgr -n list cluster
    if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi
    if ! alive slurmctld; then
        slurmctld
        config_hash >"$RUN/config.sha256"
    fi
    wait_for 30 slurmctld scontrol ping
    for n in "${NODES[@]}"; do
        alive "slurmd-$n" || slurmd -N "$n"
    done
    wait_for 60 "nodes ${NODES[*]}" nodes_idle
}

nodes_idle() { # every node answers and takes jobs
    local states
    states=$(sinfo -h -N -p "$PARTITION" -o "%N %t")
    [[ $(grep -cE " (idle|mix|alloc|comp)$" <<<"$states") -eq ${#NODES[@]} ]]
}

cmd_start() {
    preconditions start
    write_configs
    start_munge
    start_mariadb
    start_slurm
    say "up: cluster $CLUSTER, partition $PARTITION, nodes ${NODES[*]} (4 CPUs, 4 GPUs each; logs $LOGS)"
    sinfo -N -p "$PARTITION" 2>/dev/null || true
}

stop_daemons() { # stop_daemons <daemon>...: end each one this script started, by its pid file
    local pid
    for name in "$@"; do
        if alive "$name"; then
            pid=$(cat "$(pidfile "$name")")
            kill "$pid"
            for _ in $(seq 80); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
            say "stopped $name (pid $pid)"
        fi
    done
}

cmd_stop() {
    [[ $(id -u) -eq 0 ]] || die "must run as root; try: sudo $0 stop"
    stop_daemons "${NODES[@]/#/slurmd-}" slurmctld slurmdbd mariadbd munged
    if [[ -w /etc/hosts ]] && grep -q "energybench-test-cluster" /etc/hosts; then
        # /etc/hosts may be a bind mount: rewrite in place rather than rename over it
        grep -v "energybench-test-cluster" /etc/hosts >"$RUN/hosts.tmp" || true
        cat "$RUN/hosts.tmp" >/etc/hosts && rm -f "$RUN/hosts.tmp"
    fi
}

cmd_status() {
    local rc=0
    for name in munged mariadbd slurmdbd slurmctld "${NODES[@]/#/slurmd-}"; do
        if alive "$name"; then say "$name: running (pid $(cat "$(pidfile "$name")"))"
        else say "$name: not running"; rc=1; fi
    done
    if ((rc == 0)) && nodes_idle; then sinfo -N -p "$PARTITION"; else say "cluster is not up (start: $0 start)"; rc=1; fi
    return $rc
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
