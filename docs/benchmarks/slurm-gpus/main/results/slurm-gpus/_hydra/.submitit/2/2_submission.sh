#!/bin/bash

# Parameters
#SBATCH --array=0-1%2
#SBATCH --cpus-per-task=8
#SBATCH --error=/tmp/sess/main/results/slurm-gpus/_hydra/.submitit/%A_%a/%A_%a_0_log.err
#SBATCH --gpus-per-task=1
#SBATCH --job-name=energybench
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --open-mode=append
#SBATCH --output=/tmp/sess/main/results/slurm-gpus/_hydra/.submitit/%A_%a/%A_%a_0_log.out
#SBATCH --partition=gpu
#SBATCH --requeue
#SBATCH --signal=USR2@90
#SBATCH --time=60
#SBATCH --wckey=submitit

# setup
export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"
export NCCL_NVLS_ENABLE="${NCCL_NVLS_ENABLE:-0}"

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output /tmp/sess/main/results/slurm-gpus/_hydra/.submitit/%A_%a/%A_%a_%t_log.out --error /tmp/sess/main/results/slurm-gpus/_hydra/.submitit/%A_%a/%A_%a_%t_log.err --kill-on-bad-exit=1 /opt/torch/.venv/bin/python3 -u -m submitit.core._submit /tmp/sess/main/results/slurm-gpus/_hydra/.submitit/%j
