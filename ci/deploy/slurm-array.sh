#!/usr/bin/env bash
# A paper-scale `lens audit` as a Slurm job array: one task per shard, one GPU each.
#   jid=$(sbatch --parsable ci/deploy/slurm-array.sh)                                  # the shards
#   sbatch --dependency=afterok:"$jid" ci/deploy/slurm-array.sh merge                  # then the merge
# `lens audit --shard N` takes the task's 0-based index from SLURM_ARRAY_TASK_ID minus SLURM_ARRAY_TASK_MIN (divided
# by SLURM_ARRAY_TASK_STEP), so --array=0-3 and --array=1-4 both work; keep N equal to the number of tasks. A task that
# is requeued after preemption resumes: its finished runs are skipped.
#SBATCH --job-name=lens-audit
#SBATCH --array=0-3
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --output=lens-audit-%A_%a.log
set -euo pipefail

shards="${LENS_SHARDS:-4}"
claims="${LENS_CLAIMS:-fixtures/claims/paper-scale-claims.json}"
results="${LENS_RESULTS:-results}"
lens="${LENS_BIN:-lens}"

if [ "${1:-}" = "merge" ]; then
  exec "$lens" audit merge "$results"/shard-* --out "$results/audit" --overwrite
fi
: "${SLURM_ARRAY_TASK_ID:?run this script with sbatch (a job array), or pass 'merge'}"
task_min="${SLURM_ARRAY_TASK_MIN:-0}"
task_step="${SLURM_ARRAY_TASK_STEP:-1}"
index=$(( (SLURM_ARRAY_TASK_ID - task_min) / task_step ))
exec "$lens" audit --claims "$claims" --device cuda --shard "$shards" --out "$results/shard-$index"
