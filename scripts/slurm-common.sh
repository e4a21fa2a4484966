# Sourced by scripts/slurm-test-cluster.sh and scripts/slurm-gpu-cluster.sh: what their slurm.conf files share.
# Needs SPOOL, RUN and LOGS, and a die() function, from the script that sources it.

wait_for() { # wait_for <seconds> <what> <command...>
    local seconds=$1 what=$2; shift 2
    for _ in $(seq $((seconds * 4))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.25
    done
    die "$what did not come up within ${seconds}s (logs: $LOGS)"
}

slurm_conf_common() { # the options both throwaway clusters use, one per line
    cat <<EOF
SlurmUser=root
AuthType=auth/munge
# a requeued job waits cred_expire seconds before it may start again (default 120)
AuthInfo=cred_expire=10
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d-%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd-%n.log
# no cgroups, no systemd: processes tracked by parent pid, no binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# schedule every couple of seconds (defaults: 60 s, backfill 30 s): a requeued job starts when eligible
SchedulerParameters=sched_interval=2,bf_interval=2
GresTypes=gpu
# the nodes may declare more CPUs than this machine has; jobs here are tiny
SlurmdParameters=config_overrides
ReturnToService=2
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
# quick turn-around: SIGTERM -> SIGKILL after 15 s, a requeued job may start again soon
KillWait=15
MinJobAge=60
InactiveLimit=0
SlurmdTimeout=60
EOF
}
