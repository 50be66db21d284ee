# The checks a lent GPU card runs, in two device calls on one warm machine (tests/bench/gpu_carry.py writes the
# exact calls into .gpu-carry/steps.txt, after one call per carried part):
#   bash tests/bench/card_check.sh serve   # ~5 min: ViT-B-32 exported on the card (fp32 + fp16 + fused), then the
#                                           # whole-server check (issue 10) on that model
#   bash tests/bench/card_check.sh core    # ~3 min: towers vs torch eager fp16 and the Embedder's callers
#                                           # (vs_torch.py), the CUDA serving paths (cuda_paths.py) (issue 11)
# Each step has its own time limit and a failed step does not stop the next; the results land in $OUT (what a
# device call brings back), the model stays in /tmp/card-check for the second call. Rehearsed on the CPU by
# tests/bench/test_gpu_carry.py with CARD_CHECK_DRY=1 (prints the commands instead of running them).
set -u
phase=${1:?serve or core}
carry=${GPU_CARRY:-.gpu-carry}
work=${CARD_CHECK_WORK:-/tmp/card-check}
out=${OUT:?OUT: the folder a device call brings back}
run() {  # run LIMIT_S NAME CMD...: one step, its output in $out/NAME.log
  local limit=$1 name=$2
  shift 2
  if [ "${CARD_CHECK_DRY:-0}" = 1 ]; then echo "$name: timeout $limit $*"; return 0; fi
  echo "== $name ($(date -u +%T))"
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  echo "$name: exit $rc"; tail -n 5 "$out/$name.log"
  return $rc
}
if [ "${CARD_CHECK_DRY:-0}" != 1 ]; then
  # shellcheck disable=SC1091
  source "$carry/unpack.sh" || exit 1
  export PYTHONPATH=$PWD:$PWD/server:$PWD/export:$PWD/clients/python${PYTHONPATH:+:$PYTHONPATH}
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$out/card.txt" 2>&1
fi
mkdir -p "$work"
model=$work/model
case $phase in
  serve)
    # fp16 first (issue 11: the export on the card's torch); without it the check still runs on fp32. A rerun on
    # the same machine keeps the model it has.
    [ -f "$model/manifest.json" ] && [ "${CARD_CHECK_DRY:-0}" != 1 ] ||
      run 150 export-fp16 python3 -m moments_export --model ViT-B-32 --random-weights --fp16 yes --out "$model" ||
      run 120 export-fp32 python3 -m moments_export --model ViT-B-32 --random-weights --fp16 no --out "$model"
    cp "$model/manifest.json" "$out/manifest.json" 2>/dev/null
    run 280 server-check python3 -m tests.bench.server_check --out "$out" --device cuda --model-dir "$model" --budget-s 240
    ;;
  core)
    run 200 vs-torch python3 -m tests.bench.vs_torch --model-dir "$model" --device cuda --out "$out/vs-torch.json"
    run 90 cuda-paths python3 -m tests.bench.cuda_paths --model "$model" --device cuda --seconds 3 --out "$out/cuda-paths.json"
    ;;
  *) echo "unknown phase $phase (serve or core)"; exit 2 ;;
esac
