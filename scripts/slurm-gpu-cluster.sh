#!/usr/bin/env bash
# Slurm on a host that reaches no package registry (a lent GPU host): two slurmd nodes on the one host, each
# owning one GPU as GRES `gpu`, with accounting (slurmdbd + MariaDB) as in the CI test cluster.
#
#   scripts/slurm-gpu-cluster.sh download     # HERE, with apt: Debian packages -> .carry/debs/ (git-ignored)
#   scripts/slurm-gpu-cluster.sh up           # THERE, as root: unpack into a prefix, write configs, start daemons
#   scripts/slurm-gpu-cluster.sh env          # prints the exports that put the prefix's sbatch/srun/... first
#   scripts/slurm-gpu-cluster.sh status | down
#
# `download` fetches slurmctld, slurmd, slurmdbd, slurm-client, the MySQL accounting plugin, munge and
# mariadb-server with their dependencies (less the base: required/Essential/Protected, libc6, libstdc++6...), for THIS
# machine's release (written to .carry/debs/MANIFEST). `up` never installs over /: it unpacks every .deb with
# `dpkg -x` into $ENERGYBENCH_SLURM_BASE/root (default /var/tmp/energybench-gpu-slurm) and runs the daemons
# from there (LD_LIBRARY_PATH into the prefix for the daemons alone; the client commands are wrappers that
# pass the prefix to the dynamic loader with --library-path, so jobs inherit no LD_LIBRARY_PATH). Nodes
# node1 and node2 (`127.0.0.1 node1 node2` marked in /etc/hosts), partition `gpu`, cluster `energybench-gpu`;
# node1 owns $ENERGYBENCH_SLURM_GPU_FILES' first device file (default /dev/nvidia0), node2 the second
# (/dev/nvidia1); `none` declares no GRES (CPU mode). Ports 17817 (slurmctld), 17819 (slurmdbd), 17111-17112
# (slurmd), 17306 (MariaDB, TCP on 127.0.0.1 and its own socket): apart from the CI cluster's
# (scripts/slurm-test-cluster.sh), which can run beside it. Everything it writes is under the base
# directory, except a line in /etc/hosts and, on a cgroup2 host without systemd, /sys/fs/cgroup/system.slice
# (slurmd's scopes go there); `down` stops the daemons it started (by pid file), removes its /etc/hosts line
# and the nodes' cgroups, and the slice if `up` made it.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=slurm-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/slurm-common.sh"
DEBS=${ENERGYBENCH_SLURM_DEBS:-$REPO/.carry/debs}
BASE=${ENERGYBENCH_SLURM_BASE:-/var/tmp/energybench-gpu-slurm}
GPU_FILES=${ENERGYBENCH_SLURM_GPU_FILES:-/dev/nvidia0 /dev/nvidia1}
ROOT=$BASE/root ETC=$BASE/etc RUN=$BASE/run LOGS=$BASE/log SPOOL=$BASE/spool WRAP=$BASE/bin
CLUSTER=ebgpu PARTITION=gpu NODES=(node1 node2)
CTLD_PORT=17817 DBD_PORT=17819 SLURMD_PORTS=17111-17112 DB_PORT=17306 DB_PASS=energybench-gpu
PACKAGES=(slurmctld slurmd slurmdbd slurm-client slurm-wlm-basic-plugins slurm-wlm-mysql-plugin munge mariadb-server)
CLIENTS=(srun sbatch salloc squeue scancel sacct sacctmgr sinfo scontrol sstat)
MUNGE_SOCKET=/run/munge/munge.socket.2  # munged's default, compiled into libmunge
HOSTS_MARK="# energybench-gpu-cluster"
SLICE=/sys/fs/cgroup/system.slice
MULTIARCH=x86_64-linux-gnu
BASE_LIBS="libc6 libgcc-s1 libcrypt1 libstdc++6"  # never carried: tied to the host's loader and toolchain
LOADER=/lib64/ld-linux-x86-64.so.2
LIBS=$ROOT/usr/lib/$MULTIARCH/slurm-wlm:$ROOT/usr/lib/$MULTIARCH:$ROOT/lib/$MULTIARCH

trap '' PIPE
die() { echo "slurm-gpu-cluster: error: $*" >&2; exit 1; }
say() { echo "slurm-gpu-cluster: $*" 2>/dev/null || true; }
need_root() { [[ $(id -u) -eq 0 ]] || die "must run as root (it starts system daemons and edits /etc/hosts); try: sudo $0 $1"; }

cmd_download() {
    need_root download
    command -v apt-get >/dev/null || die "no apt-get here: run 'download' on a Debian/Ubuntu machine with a package registry"
    mkdir -p "$DEBS"
    apt-get update -qq
    local all keep
    all=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
          --no-enhances "${PACKAGES[@]}" | grep -v '^[ <]' | sort -u)
    # the base system is on every Debian/Ubuntu host and not carried: Priority required, Essential, Protected,
    # and the C/C++ runtime (a prefix's libc.so.6 beside the host's loader would break every program)
    keep=$(apt-cache show --no-all-versions $all | awk -v skip=" $BASE_LIBS " '
        /^Package: /{p=$2; drop=index(skip, " " p " ") > 0}
        /^(Priority: required|Essential: yes|Protected: yes)/{drop=1}
        /^$/{if (p != "" && !drop) print p; p=""}
        END{if (p != "" && !drop) print p}' | sort -u)
    rm -f "$DEBS"/*.deb
    (cd "$DEBS" && apt-get download -qq $keep 2>&1 | grep -v "unsandboxed" || true)
    {
        echo "# scripts/slurm-gpu-cluster.sh download, $(date -u +%FT%TZ)"
        echo "# for: $(. /etc/os-release && echo "$PRETTY_NAME") ($(dpkg --print-architecture))"
        echo "# packages: ${PACKAGES[*]} and their dependencies less Priority required / Essential / Protected / $BASE_LIBS"
        (cd "$DEBS" && ls -1 ./*.deb | sed 's|^\./||')
    } >"$DEBS/MANIFEST"
    say "$(ls "$DEBS"/*.deb | wc -l) packages, $(du -sh "$DEBS" | cut -f1), in $DEBS (list: $DEBS/MANIFEST)"
}

unpack() {
    compgen -G "$DEBS/*.deb" >/dev/null || die "no .deb files in $DEBS: run '$0 download' on a machine with apt, and carry $DEBS here"
    [[ -x $LOADER ]] || die "$LOADER is missing: this script expects an x86-64 glibc host"
    local stamp
    stamp=$(cat "$DEBS/MANIFEST" 2>/dev/null | sha256sum | cut -d" " -f1)
    if [[ $(cat "$ROOT/.unpacked" 2>/dev/null) != "$stamp" ]]; then
        say "unpacking $(ls "$DEBS"/*.deb | wc -l) packages into $ROOT"
        mkdir -p "$ROOT"
        for deb in "$DEBS"/*.deb; do dpkg -x "$deb" "$ROOT"; done
        echo "$stamp" >"$ROOT/.unpacked"
    fi
    for d in slurmctld slurmd slurmstepd; do  # what update-alternatives would link: Slurm tells its daemons
        ln -sfn "$d-wlm" "$ROOT/usr/sbin/$d"   # apart by argv[0] (as slurmctld-wlm, no dbd agent: a crash)
    done
    mkdir -p "$WRAP"
    for tool in "${CLIENTS[@]}"; do  # the loader gets the library path; the job's environment does not
        printf '#!/bin/sh\nSLURM_CONF=%s; export SLURM_CONF\nexec %s --library-path %s %s "$@"\n' \
            "$ETC/slurm.conf" "$LOADER" "$LIBS" "$ROOT/usr/bin/$tool" >"$WRAP/$tool"
        chmod +x "$WRAP/$tool"
    done
    for tool in munge unmunge; do
        printf '#!/bin/sh\nexec %s --library-path %s %s "$@"\n' "$LOADER" "$LIBS" "$ROOT/usr/bin/$tool" >"$WRAP/$tool"
        chmod +x "$WRAP/$tool"
    done
}

gres_lines() { # gres_lines <slurm|gres>: node GRES from $GPU_FILES, one device file per node
    local files=($GPU_FILES) i
    [[ ${files[0]:-none} == none ]] && return 0
    ((${#files[@]} == ${#NODES[@]})) || die "ENERGYBENCH_SLURM_GPU_FILES names ${#files[@]} device files; give ${#NODES[@]} (one per node) or none"
    for i in "${!NODES[@]}"; do
        [[ -e ${files[$i]} ]] || die "${files[$i]} (the GPU of ${NODES[$i]}) does not exist; set ENERGYBENCH_SLURM_GPU_FILES"
        echo "NodeName=${NODES[$i]} Name=gpu File=${files[$i]}"
    done
}

task_prolog() { # the TaskProlog: each node's task gets its own GPU's number in CUDA_VISIBLE_DEVICES
    # Without cgroup device confinement every task sees all GPUs of the host, and Slurm numbers a node's GPUs
    # from 0 (node2's /dev/nvidia1 arrives as CUDA_VISIBLE_DEVICES=0, i.e. node1's GPU): replace it by the
    # device file's minor number, in NVML's (PCI bus) order.
    local files=($GPU_FILES) i
    echo "#!/bin/sh"
    echo "# scripts/slurm-gpu-cluster.sh: rewritten at every 'up'"
    echo '[ -n "${CUDA_VISIBLE_DEVICES:-}" ] || exit 0'
    echo 'case "$SLURMD_NODENAME" in'
    if [[ ${files[0]:-none} != none ]]; then
        for i in "${!NODES[@]}"; do
            echo "  ${NODES[$i]}) echo export CUDA_VISIBLE_DEVICES=${files[$i]##*[!0-9]}; echo export CUDA_DEVICE_ORDER=PCI_BUS_ID ;;"
        done
    fi
    echo "esac"
}

write_configs() {
    local host cpus gres=""
    host=$(hostname -s)
    cpus=$(( $(nproc) / ${#NODES[@]} )); ((cpus >= 1)) || cpus=1
    [[ $(gres_lines) ]] && gres="Gres=gpu:1"
    mkdir -p "$ETC" "$RUN" "$LOGS" "$SPOOL/ctld" "${NODES[@]/#/$SPOOL/d-}"
    cat >"$ETC/slurm.conf" <<EOF
# scripts/slurm-gpu-cluster.sh: rewritten at every 'up'
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
PluginDir=$ROOT/usr/lib/$MULTIARCH/slurm-wlm
PlugStackConfig=$ETC/plugstack.conf
TaskProlog=$ETC/task-prolog.sh
CredType=cred/munge
AccountingStoragePort=$DBD_PORT
$(slurm_conf_common)
NodeName=node[1-2] NodeHostname=$host NodeAddr=127.0.0.1 Port=[$SLURMD_PORTS] CPUs=$cpus RealMemory=4000 $gres State=UNKNOWN
PartitionName=$PARTITION Nodes=node[1-2] Default=YES MaxTime=INFINITE State=UP
EOF
    { echo "AutoDetect=off"; gres_lines; } >"$ETC/gres.conf"
    cgroup_conf
    task_prolog >"$ETC/task-prolog.sh" && chmod 755 "$ETC/task-prolog.sh"
    : >"$ETC/plugstack.conf"
    cat >"$ETC/slurmdbd.conf" <<EOF
AuthType=auth/munge
PluginDir=$ROOT/usr/lib/$MULTIARCH/slurm-wlm
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$LOGS/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$ETC/slurmdbd.conf"
    if ! grep -qF "$HOSTS_MARK" /etc/hosts; then echo "127.0.0.1 ${NODES[*]} $HOSTS_MARK" >>/etc/hosts; fi
}

cgroup_conf() { # Slurm 22.05 picks cgroup/v2 on a unified hierarchy and creates its scopes through systemd's
    # D-Bus, which a lent GPU host (Ubuntu 24.04 VM, cgroup2, no dbus) lacks: slurmd failed its start there.
    # Create the scope directories itself instead. On cgroup v1 hosts (this CI machine) no file is needed.
    # slurmd then makes /sys/fs/cgroup/system.slice/<node>_slurmstepd.scope, but not the slice (systemd's):
    # made here if missing, and removed by `down` with the scopes when it was made here.
    if [[ $(stat -fc %T /sys/fs/cgroup 2>/dev/null) == cgroup2fs ]]; then
        printf '%s\n' "# scripts/slurm-gpu-cluster.sh: rewritten at every 'up'" "CgroupPlugin=cgroup/v2" \
            "IgnoreSystemd=yes" "CgroupAutomount=yes" >"$ETC/cgroup.conf"
        if [[ ! -d $SLICE ]]; then mkdir "$SLICE" && echo "$SLICE" >"$RUN/made-slice"; fi
    else
        rm -f "$ETC/cgroup.conf"
    fi
}

alive() { [[ -s $RUN/$1.pid ]] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

daemon() { # daemon <command...>: a daemon of the prefix, its libraries and plugins from there
    env LD_LIBRARY_PATH="$LIBS" SLURM_CONF="$ETC/slurm.conf" "$@"
}

start_munge() {
    # Slurm 22.05 reaches munged on its default socket: a non-default one (AuthInfo=socket=...,
    # AccountingStoragePass=<socket>) crashed slurmctld on a fresh state here. A munged already answering
    # there (the CI test cluster's, on a shared machine) is used as it is; else this script starts one.
    if munge_ok; then say "munged: using the one answering on $MUNGE_SOCKET"; return 0; fi
    mkdir -p "$BASE/munge" "$(dirname "$MUNGE_SOCKET")" && chmod 700 "$BASE/munge"
    [[ -s $BASE/munge/munge.key ]] || dd if=/dev/urandom of="$BASE/munge/munge.key" bs=1 count=1024 status=none
    chmod 400 "$BASE/munge/munge.key"
    daemon "$ROOT/usr/sbin/munged" --force --socket="$MUNGE_SOCKET" --key-file="$BASE/munge/munge.key" \
        --pid-file="$RUN/munged.pid" --log-file="$LOGS/munged.log" --seed-file="$BASE/munge/munge.seed"
    wait_for 10 munged munge_ok
}

munge_ok() { "$WRAP/munge" -n </dev/null 2>/dev/null | "$WRAP/unmunge" >/dev/null 2>&1; }

mysql_client() { daemon "$ROOT/usr/bin/mariadb" --no-defaults --socket="$RUN/mysqld.sock" -u root "$@"; }

start_mariadb() {
    local share=$ROOT/usr/share/mariadb
    if [[ ! -d $BASE/mysql/mysql ]]; then
        mkdir -p "$BASE/mysql"
        daemon "$ROOT/usr/bin/mariadb-install-db" --no-defaults --basedir="$ROOT/usr" --datadir="$BASE/mysql" \
            --user=root --auth-root-authentication-method=socket >"$LOGS/mariadb-install-db.log" 2>&1 \
            || die "mariadb-install-db failed (log: $LOGS/mariadb-install-db.log)"
    fi
    if ! alive mariadbd; then
        setsid env LD_LIBRARY_PATH="$LIBS" "$ROOT/usr/sbin/mariadbd" --no-defaults --basedir="$ROOT/usr" \
            --datadir="$BASE/mysql" --lc-messages-dir="$share" --plugin-dir="$ROOT/usr/lib/$MULTIARCH/mariadb19/plugin" \
            --user=root --socket="$RUN/mysqld.sock" --port=$DB_PORT --bind-address=127.0.0.1 \
            --pid-file="$RUN/mariadbd.pid" >>"$LOGS/mariadbd.log" 2>&1 </dev/null &
        wait_for 60 mariadbd mysql_client -e "select 1"
    fi
    mysql_client <<EOF
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
EOF
}

nodes_idle() {
    [[ $("$WRAP/sinfo" -h -N -p "$PARTITION" -o "%N %t" | grep -cE " (idle|mix|alloc|comp)$") -eq ${#NODES[@]} ]]
}

start_slurm() {
    alive slurmdbd || daemon "$ROOT/usr/sbin/slurmdbd"
    wait_for 30 slurmdbd "$WRAP/sacctmgr" -n list cluster
    "$WRAP/sacctmgr" -n -P list cluster format=cluster | grep -qx "$CLUSTER" || "$WRAP/sacctmgr" -i add cluster "$CLUSTER" >/dev/null
    alive slurmctld || daemon "$ROOT/usr/sbin/slurmctld"
    wait_for 30 slurmctld "$WRAP/scontrol" ping
    for n in "${NODES[@]}"; do
        alive "slurmd-$n" || daemon "$ROOT/usr/sbin/slurmd" -N "$n" -d "$ROOT/usr/sbin/slurmstepd"
    done
    wait_for 60 "nodes ${NODES[*]}" nodes_idle
}

cmd_up() {
    need_root up
    unpack
    write_configs
    start_munge
    start_mariadb
    start_slurm
    say "up: cluster $CLUSTER, partition $PARTITION, nodes ${NODES[*]} (GRES: ${GPU_FILES}); logs $LOGS"
    "$WRAP/sinfo" -N -o "%N %t %G" || true
    say "to use it: eval \"\$($0 env)\""
}

cmd_env() {
    echo "export PATH=$WRAP:\$PATH SLURM_CONF=$ETC/slurm.conf"
}

stop() { # stop <daemon>...: end each one this script started, by its pid file
    local pid
    for name in "$@"; do
        if alive "$name"; then
            pid=$(cat "$RUN/$name.pid")
            kill "$pid"
            for _ in $(seq 80); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
            say "stopped $name (pid $pid)"
        fi
    done
}

cmd_down() {
    need_root down
    stop "${NODES[@]/#/slurmd-}" slurmctld slurmdbd mariadbd munged
    local scope
    for scope in "${NODES[@]/%/_slurmstepd.scope}"; do  # the nodes' cgroups (cgroup2 hosts), deepest first
        [[ -d $SLICE/$scope ]] && find "$SLICE/$scope" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
    if [[ -s $RUN/made-slice ]] && rmdir "$SLICE" 2>/dev/null; then rm -f "$RUN/made-slice"; fi  # else kept for the next down
    if grep -qF "$HOSTS_MARK" /etc/hosts; then  # /etc/hosts may be a bind mount: rewrite in place
        grep -vF "$HOSTS_MARK" /etc/hosts >"$RUN/hosts.tmp" || true
        cat "$RUN/hosts.tmp" >/etc/hosts && rm -f "$RUN/hosts.tmp"
    fi
}

cmd_status() {
    local rc=0
    for name in munged mariadbd slurmdbd slurmctld "${NODES[@]/#/slurmd-}"; do
        if alive "$name"; then say "$name: running (pid $(cat "$RUN/$name.pid"))"; else say "$name: not running"; rc=1; fi
    done
    if ((rc == 0)) && nodes_idle; then "$WRAP/sinfo" -N -o "%N %t %G"; else say "cluster is not up (start: $0 up)"; rc=1; fi
    return $rc
}

case "${1:-}" in
    download) cmd_download ;;
    up) cmd_up ;;
    env) cmd_env ;;
    status) cmd_status ;;
    down) cmd_down ;;
    *) echo "usage: $0 download|up|env|status|down" >&2; exit 2 ;;
esac
