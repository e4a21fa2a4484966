#!/usr/bin/env bash
# Issue 17's measurements on a lent two-GPU H200 host, in two calls (each under the device tool's 10 minutes).
#
#   scripts/h200-engine.sh one OUT    # GPU 0: 7B decode profiles of the fast engine's variants, the best chosen,
#                                     #   then 7B reference/fast/transformers; GPU 1: 13B the same (fast: the chosen)
#   scripts/h200-engine.sh two OUT    # both GPUs: 65B at shards=2 (reference, fast); logits checks (7B, shards 1, 2)
#
# The variant (VARIANT="--pack --inductor ...", default: what `one` chose, read from OUT/chosen) is what the fast
# engine rows run with; each row records it. Compile cache: /tmp/eb-compile (cold in a fresh machine: the first
# process of each model and variant compiles, the later ones load). Power limits are only read.
# Needs .carry/wheels in the checkout (hydra-core, omegaconf, antlr4, fairscale, submitit).
set -uo pipefail
phase=${1:?one or two}
out=${2:?output folder}
deadline_s=${DEADLINE_S:-560}
cd "$(dirname "$0")/.."
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .carry/wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
cache=/tmp/eb-compile
end_s=$(( $(date +%s) + deadline_s ))
left() { echo $(( end_s - $(date +%s) )); }
run() {  # run LOG CMD...: cut at the phase's deadline, output to OUT/LOG
    local log=$1; shift
    local s; s=$(left)
    ((s > 15)) || { echo "deadline: skipped: $*" | tee -a "$out/$log"; return 0; }
    echo "[$(date -u +%T)] $*" >>"$out/$log"
    timeout -s TERM "$s" "$@" >>"$out/$log" 2>&1
    echo "[$(date -u +%T)] rc=$?" >>"$out/$log"
}
profile() {  # profile VARIANT-ARGS...: 7B decode profile on this process's GPU
    run gpu0.log python3 benchmarks/engine_profile.py --model 7b --batches 1,64 --compile-cache "$cache" --out "$out/p" "$@"
}
choose() {  # the variant whose profile rows have the highest roofline fraction summed over batches 1 and 64
    python3 - "$out/p/engine-profile.json" >"$out/chosen" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
score = {}
for r in rows:
    score.setdefault(r["variant"], 0.0)
    score[r["variant"]] += r["roofline_frac"] or 0.0
best = max(score, key=score.get)
args = ["--pack"] if best.split("+")[0] == "pack" else []
args += [a for part in best.split("+") if "=" in part for a in ("--inductor", part)]
print(" ".join(args))
print(json.dumps(score), file=sys.stderr)
PY
}

case $phase in
  one)
    rm -f "$out/chosen"
    (
      export CUDA_VISIBLE_DEVICES=0
      profile
      profile --inductor coordinate_descent_tuning=True
      profile --pack --inductor coordinate_descent_tuning=True
      choose 2>>"$out/gpu0.log"
      echo "chosen: '$(cat "$out/chosen")'" >>"$out/gpu0.log"
      run gpu0.log python3 benchmarks/engine.py --models 7b --compile-cache "$cache" --out "$out/e0" $(cat "$out/chosen")
    ) &
    (
      export CUDA_VISIBLE_DEVICES=1
      run gpu1.log python3 benchmarks/engine.py --models 13b --engines reference,transformers --compile-cache "$cache" --out "$out/e1"
      while [[ ! -s $out/chosen ]] && (( $(left) > 60 )); do sleep 2; done
      run gpu1.log python3 benchmarks/engine.py --models 13b --engines fast --compile-cache "$cache" --out "$out/e1" $(cat "$out/chosen" 2>/dev/null)
    ) &
    wait
    ;;
  two)
    variant=${VARIANT-$(cat "$out/chosen" 2>/dev/null)}
    # the fast engine as it is (no variant) beside `one`'s variant rows, under the same load (both GPUs busy)
    (export CUDA_VISIBLE_DEVICES=0
     run gpu0.log python3 benchmarks/engine.py --models 7b --engines fast --compile-cache "$cache" --out "$out/e0") &
    (export CUDA_VISIBLE_DEVICES=1
     run gpu1.log python3 benchmarks/engine.py --models 13b --engines fast --compile-cache "$cache" --out "$out/e1") &
    wait
    run gpu01.log python3 benchmarks/engine.py --shards 2 --models 65b --engines reference,fast --compile-cache "$cache" --out "$out/e2" $variant
    (export CUDA_VISIBLE_DEVICES=0
     run logits.log python3 benchmarks/engine_logits.py --model 7b --shards 1 --dtypes float16 --out "$out/l1" $variant)
    run logits.log python3 benchmarks/engine_logits.py --model 7b --shards 2 --dtypes float16 --out "$out/l2" $variant
    ;;
  *) echo "error: phase=$phase: use one or two" >&2; exit 2 ;;
esac
tail -n 30 "$out"/*.log
