#!/usr/bin/env bash
# The paper's grid, as far as lent H200s allow (issue 14), run through the product's own sweep command.
#
#   scripts/h200-reproduction.sh single RESULTS   # 2 GPUs: 7B on GPU 0 and 13B on GPU 1, side by side
#   scripts/h200-reproduction.sh pair RESULTS     # 2 GPUs: 65B, 7B and 13B at shards=2
#
# Needs, in the checkout: .carry/wheels (hydra-core, omegaconf, antlr4, fairscale, submitit wheels),
# .carry/datasets/{alpaca,gsm8k}, .carry/tokenizer.model (copies of ../shared; git-ignored).
# Settings common to every point (128 prompts, power limits only read: power.backend=none, policy observe, never
# change a lent GPU's settings; 3 s idle) and the main points' grid are conf/experiment/paper_h200.yaml; the
# commands below override its grid keys (tests/test_presets.py: the published points' ids come out unchanged).
# Random fp16 weights: LLaMA's weights cannot be downloaded here (docs/results/README.md says what follows).
# The phase is cut at DEADLINE_S seconds (SIGTERM: the point in flight is recorded failed, the rest
# stay pending); what finished is in RESULTS.
set -uo pipefail
phase=${1:?single or pair}
results=${2:?results folder}
deadline_s=${DEADLINE_S:-540}
cd "$(dirname "$0")/.."
root=$PWD
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .carry/wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$root PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
export ENERGYBENCH_DATA_DIR=$root/.carry/datasets ENERGYBENCH_TOKENIZER=$root/.carry/tokenizer.model
common=(experiment=paper_h200 "out_dir=$results")
end_s=$(( $(date +%s) + deadline_s ))
sweep() {  # one sweep command, cut at the phase's deadline
  local left_s=$(( end_s - $(date +%s) ))
  ((left_s > 20)) || { echo "deadline: skipped: $*"; return 0; }
  timeout -s TERM "$left_s" python3 -m energybench.sweep -m "${common[@]}" "$@"
}

single_gpu_grid() {  # $1 model; every sweep below writes into sweep=h200-$1
  local s=(model=$1 "sweep=h200-$1")
  sweep "${s[@]}"  # the preset's main points: engine=reference,fast dataset=alpaca,gsm8k batch=64 max_tokens=256
  sweep "${s[@]}" engine=reference dataset=alpaca batch=16,32,128
  sweep "${s[@]}" engine=reference dataset=alpaca max_tokens=128,512
  sweep "${s[@]}" engine=reference dataset=alpaca length=oracle
}

case $phase in
  single)
    (export CUDA_VISIBLE_DEVICES=0; single_gpu_grid 7b) > "$results-7b.log" 2>&1 &
    (export CUDA_VISIBLE_DEVICES=1; single_gpu_grid 13b) > "$results-13b.log" 2>&1 &
    wait
    cat "$results-7b.log" "$results-13b.log" | grep -v '^\s*$' | tail -n 80
    ;;
  pair)
    sweep model=65b dataset=gsm8k shards=2 engine=fast sweep=h200-pair
    sweep model=65b dataset=gsm8k shards=2 engine=reference samples=64 sweep=h200-pair
    sweep model=7b,13b dataset=alpaca shards=2 sweep=h200-pair
    ;;
  *) echo "error: phase=$phase: use single or pair" >&2; exit 2 ;;
esac
