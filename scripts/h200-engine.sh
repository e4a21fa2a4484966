#!/usr/bin/env bash
# Issue 17's measurements on a lent two-GPU H200 host, one phase per call (each under the device tool's 10 minutes).
#
#   scripts/h200-engine.sh one OUT    # GPU 0: the decode attention kernels alone (benchmarks/decode_attention.py),
#                                     #   the draw alone (benchmarks/sampling.py),
#                                     #   7B decode profile (cold, then warm in a fresh process), then
#                                     #   benchmarks/engine.py (reference, fast, fast_tuned, transformers), the
#                                     #   batch-1 profile of fast_tuned (warm: engine.py compiled it), logits
#                                     #   checks (shards=1; fast, then with the Triton GEMV as fast_tuned runs it),
#                                     #   the GPU tests; GPU 1: 13B profiles and engine.py the same
#   scripts/h200-engine.sh two OUT    # both GPUs: 65B at shards=2 (reference, fast, transformers split by layers,
#                                     #   then fast_tuned), the shards=2 logits checks, the 65B profile
#   scripts/h200-engine.sh profiles OUT    # phase one's profiles alone: 7B on GPU 0, 13B on GPU 1 (fast cold, then
#                                     #   warm in a fresh process; fast_tuned at batch 1)
#   scripts/h200-engine.sh build OUT  # GPU 0: the 7B build step by step (benchmarks/engine_build.py, cold then warm),
#                                     #   the batch-16/64 matmuls alone (benchmarks/skinny.py);
#                                     #   then both GPUs: 65B's fast_tuned batch-1 profile at shards=2
#   scripts/h200-engine.sh tuned OUT  # one GPU: fast_tuned's rows (7B and 13B engine.py, cold then warm), its fp16
#                                     #   logits at batch 4 and 32, the 7B profile (cold, then warm), the GPU tests
#                                     #   (on e66d440's host the call's 570 s cut the last two GPU tests: run them
#                                     #   alone if tests.log shows fewer than 16 passed)
#   scripts/h200-engine.sh ab OUT     # one GPU: the 7B fast_tuned profile (batch 1 and 64) of each tree under
#                                     #   .carry/trees/<commit> (make them with `git archive <commit> energybench
#                                     #   benchmarks conf pyproject.toml | tar x -C .carry/trees/<commit>`; COMMITS="a b",
#                                     #   full hashes), each on its own compile cache: cold, then two warm starts, the
#                                     #   commits interleaved (docs/benchmarks/engine-warmstart.md, 1677e94 against 8efb6b2)
# (benchmarks/gemv.py, the matmuls alone, ran in a call of its own.)
#
# Compile cache: /tmp/eb-compile (cold in a fresh machine: the first process of each model and engine compiles,
# the later ones load). Power limits are only read. Needs .carry/wheels in the checkout (hydra-core, omegaconf,
# antlr4, fairscale, submitit).
set -uo pipefail
phase=${1:?one, two, profiles, build, tuned or ab}
out=${2:?output folder}
deadline_s=${DEADLINE_S:-560}
cd "$(dirname "$0")/.."
mkdir -p "$out" && out=$(cd "$out" && pwd)  # absolute: the ab phase runs from the trees
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
profile() {  # profile MODEL: decode profile of the fast engine on this process's GPU(s), cold then warm
    run "prof-$1.log" python3 benchmarks/engine_profile.py --model "$1" --batches 1,64 --compile-cache "$cache" --out "$out/p-$1"
    run "prof-$1.log" python3 benchmarks/engine_profile.py --model "$1" --batches 1,64 --compile-cache "$cache" --out "$out/p-$1"
}

case $phase in
  ab)
    export CUDA_VISIBLE_DEVICES=0
    read -r -a commits <<<"${COMMITS:?COMMITS=\"<full hash> <full hash>\": the trees under .carry/trees to compare}"
    ab() {  # ab COMMIT RUN: the profile of one tree, on that tree's own compile cache and XDG cache
      local c=$1
      (cd ".carry/trees/$c" && ENERGYBENCH_SOURCE_COMMIT=$c ENERGYBENCH_SOURCE_DIRTY=0 XDG_CACHE_HOME=/tmp/xdg-$c \
        PYTHONPATH=/tmp/site:$PWD run "ab-${c:0:7}.log" python3 benchmarks/engine_profile.py --model 7b --batches 1,64 \
        --gemv --blas cublaslt --compile-prefill --kv-together --skinny --defer-residual --compile-cache "/tmp/cc-$c" \
        --out "$out/${c:0:7}-$2")
    }
    ab "${commits[0]}" cold; ab "${commits[1]}" cold
    ab "${commits[0]}" warm1; ab "${commits[1]}" warm1
    ab "${commits[1]}" warm2; ab "${commits[0]}" warm2
    ;;
  tuned)
    export CUDA_VISIBLE_DEVICES=0
    tuned="--blas cublaslt --compile-prefill --kv-together --skinny --defer-residual"  # fast_tuned's choices past batch 1
    run e.log python3 benchmarks/engine.py --models 7b,13b --engines fast_tuned --compile-cache "$cache" --out "$out/e"
    run e.log python3 benchmarks/engine.py --models 7b,13b --engines fast_tuned --compile-cache "$cache" --out "$out/e"
    for batch in 4 32; do
      run logits.log python3 benchmarks/engine_logits.py --model 7b --dtypes float16 --batch $batch $tuned --out "$out/l1"
    done
    run prof-7b.log python3 benchmarks/engine_profile.py --model 7b --batches 1,16,64 --gemv $tuned --compile-cache "$cache-p" \
        --out "$out/pt-7b"
    run prof-7b.log python3 benchmarks/engine_profile.py --model 7b --batches 1,16,64 --gemv $tuned --compile-cache "$cache-p" \
        --out "$out/pt-7b"
    run tests.log python3 -m pytest -q -m gpu tests/test_engine_gpu.py tests/test_energy_gpu.py -p no:cacheprovider
    ;;
  build)
    CUDA_VISIBLE_DEVICES=0 run build.log python3 benchmarks/engine_build.py --model 7b --out "$out/b"
    CUDA_VISIBLE_DEVICES=0 run skinny.log python3 benchmarks/skinny.py --models 7b --rows 16,64 --out "$out/sk"
    run prof-65b.log python3 -m torch.distributed.run --nproc-per-node 2 benchmarks/engine_profile.py --model 65b --batches 1 \
        --gemv --compile-cache "$cache" --out "$out/pt-65b"
    ;;
  profiles)
    for gpu_model in 0:7b 1:13b; do
      (
        export CUDA_VISIBLE_DEVICES=${gpu_model%%:*}
        m=${gpu_model#*:}
        profile "$m"
        run "prof-$m.log" python3 benchmarks/engine_profile.py --model "$m" --batches 1 --gemv --compile-cache "$cache" --out "$out/pt-$m"
      ) &
    done
    wait
    ;;
  one)
    (
      export CUDA_VISIBLE_DEVICES=0
      run attn.log python3 benchmarks/decode_attention.py --out "$out/da"
      run sampling.log python3 benchmarks/sampling.py --out "$out/sp"
      profile 7b
      run gpu0.log python3 benchmarks/engine.py --models 7b --compile-cache "$cache" --out "$out/e0"
      run prof-7b.log python3 benchmarks/engine_profile.py --model 7b --batches 1 --gemv --compile-cache "$cache" --out "$out/pt-7b"
      run logits.log python3 benchmarks/engine_logits.py --model 7b --shards 1 --dtypes float16 --out "$out/l1"
      run logits.log python3 benchmarks/engine_logits.py --model 7b --shards 1 --dtypes float16 --gemv --batch 1 --out "$out/l1"
      run tests.log python3 -m pytest -q -m gpu tests/test_engine_gpu.py -p no:cacheprovider -p no:logging
    ) &
    (
      export CUDA_VISIBLE_DEVICES=1
      profile 13b
      run gpu1.log python3 benchmarks/engine.py --models 13b --compile-cache "$cache" --out "$out/e1"
      run prof-13b.log python3 benchmarks/engine_profile.py --model 13b --batches 1 --gemv --compile-cache "$cache" --out "$out/pt-13b"
    ) &
    wait
    ;;
  two)
    run gpu01.log python3 benchmarks/engine.py --shards 2 --models 65b --engines reference,fast,transformers \
        --compile-cache "$cache" --out "$out/e2"
    run gpu01.log python3 benchmarks/engine.py --shards 2 --models 65b --engines fast_tuned --compile-cache "$cache" \
        --out "$out/e2"
    run logits.log python3 benchmarks/engine_logits.py --model 7b --shards 2 --dtypes float16 --out "$out/l2"
    run logits.log python3 benchmarks/engine_logits.py --model 7b --shards 2 --dtypes float16 --gemv --batch 1 --out "$out/l2"
    run prof-65b.log python3 -m torch.distributed.run --nproc-per-node 2 benchmarks/engine_profile.py --model 65b --batches 1,64 \
        --compile-cache "$cache" --out "$out/p-65b"
    ;;
esac
tail -n 30 "$out"/*.log
