#!/usr/bin/env bash
# GPU check: every CUDA path of tunewise on the GPUs present, with tokens/s for each.
#
#   bash bench/gpu_check.sh [--dry-run] [--out DIR] [--python PY] [--model DIR] [--arch llama|qwen2]
#
# On a CUDA machine it builds a random-weights ~0.5B model from a config (nothing is downloaded; the
# tokenizer is the embedded SmolLM2's), then runs, each step logged to DIR/<step>.log:
#   ladder        tunewise run on intent (zero-shot, few-shot, LoRA; 64 eval examples)
#   gen-hf        transformers generation, new tokens/s
#   gen-vllm      vLLM generation (model_options.engine: vllm), new tokens/s
#   compare       vLLM answers against transformers answers (greedy)
#   lora, qlora   tunewise train, tokens/s (QLoRA needs bitsandbytes)
#   ddp, fsdp     accelerate launch of tunewise train on all GPUs (DDP needs 2 GPUs for accelerate's
#                 --multi_gpu; with one GPU it runs under torchrun as a world of size 1)
# and exits non-zero if any step failed. --dry-run runs the CPU-safe parts instead (argument parsing,
# a tiny random model, a 2-step CPU training, a few tokens of CPU generation, accelerate config
# generation) in under a minute; the test suite runs it (tests/test_gpu_check.py).
set -u

DRY_RUN=0
OUT=gpu-check
PY=${PYTHON:-python}
MODEL=""
ARCH=llama
usage() { sed -n '2,/^set -u/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --out) OUT=${2:?--out needs a folder}; shift ;;
    --python) PY=${2:?--python needs an interpreter}; shift ;;
    --model) MODEL=${2:?--model needs a folder}; shift ;;
    --arch) ARCH=${2:?--arch needs llama or qwen2}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (valid: --dry-run, --out DIR, --python PY, --model DIR, --arch llama|qwen2)" >&2; exit 2 ;;
  esac
  shift
done
case "$ARCH" in llama|qwen2) ;; *) echo "gpu_check.sh: --arch must be llama or qwen2 (got '$ARCH')" >&2; exit 2 ;; esac

HERE=$(cd "$(dirname "$0")" && pwd)
HELPER="$PY $HERE/gpu_check.py"
TUNEWISE="$PY -m tunewise.cli"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false TUNEWISE_RUNS="$OUT/runs"
FAILED=()
SKIPPED=()

step() {  # step NAME COMMAND...: run it, log it, keep its RESULT lines
  local name=$1; shift
  local started=$SECONDS
  echo "== $name: $*"
  if "$@" >"$OUT/$name.log" 2>&1; then
    grep '^RESULT ' "$OUT/$name.log" | sed 's/^RESULT /   /'
    echo "   ok ($((SECONDS - started)) s)"
  else
    echo "   FAILED ($((SECONDS - started)) s), last lines of $OUT/$name.log:"
    tail -n 15 "$OUT/$name.log" | sed 's/^/   | /'
    FAILED+=("$name")
  fi
}

skip() { echo "== $1: skipped ($2)"; SKIPPED+=("$1"); }

LAYER_CLASS=$([ "$ARCH" = qwen2 ] && echo Qwen2DecoderLayer || echo LlamaDecoderLayer)

if [ "$DRY_RUN" = 1 ]; then
  echo "gpu_check.sh --dry-run: CPU-safe parts only, in $OUT"
  step build-model $HELPER build-model --size tiny --arch "$ARCH" --out "$OUT/model"
  step write-task $HELPER write-task --model "$OUT/model" --out "$OUT/task.yaml" --tiny
  step lora-cpu $TUNEWISE train "$OUT/task.yaml" --out "$OUT/train-lora" --json
  [ -f "$OUT/lora-cpu.log" ] && step lora-cpu-result $HELPER train-result "$OUT/lora-cpu.log" --name lora-cpu
  step gen-cpu $HELPER generate --model "$OUT/model" --engine transformers --out "$OUT/answers-cpu.json" --n 4 --max-new-tokens 4
  step ddp-config $HELPER accelerate-config --kind ddp --num-processes 2 --out "$OUT/ddp.yaml" --layer-class "$LAYER_CLASS"
  step fsdp-config $HELPER accelerate-config --kind fsdp --num-processes 2 --out "$OUT/fsdp.yaml" --layer-class "$LAYER_CLASS"
  echo "On a GPU machine the full check would also run: the intent ladder, transformers and vLLM generation,"
  echo "LoRA and QLoRA training, accelerate DDP and FSDP (bash bench/gpu_check.sh)."
else
  NGPU=$($PY -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)" 2>/dev/null || echo 0)
  if [ "$NGPU" = 0 ]; then
    echo "gpu_check.sh: torch sees no CUDA GPU here; run with --dry-run for the CPU-safe parts" >&2
    exit 1
  fi
  echo "gpu_check.sh: $NGPU GPU(s): $($PY -c "import torch; print(', '.join(torch.cuda.get_device_name(i) for i in range($NGPU)))")"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/   /'
  if [ -z "$MODEL" ]; then
    MODEL="$OUT/model"
    step build-model $HELPER build-model --size 0.5b --arch "$ARCH" --out "$MODEL"
  fi
  step write-task $HELPER write-task --model "$MODEL" --out "$OUT/task.yaml"
  step ladder $TUNEWISE run "$OUT/task.yaml" --all --fresh
  step gen-hf $HELPER generate --model "$MODEL" --engine transformers --out "$OUT/answers-transformers.json"
  if $PY -c "import vllm" >/dev/null 2>&1; then
    step gen-vllm $HELPER generate --model "$MODEL" --engine vllm --out "$OUT/answers-vllm.json"
    [ -f "$OUT/answers-vllm.json" ] && [ -f "$OUT/answers-transformers.json" ] && \
      step compare $HELPER compare "$OUT/answers-transformers.json" "$OUT/answers-vllm.json"
  else
    echo "== gen-vllm: FAILED: vllm is not installed (pip install 'tunewise[vllm]')"
    FAILED+=(gen-vllm)
  fi
  step lora $TUNEWISE train "$OUT/task.yaml" --method lora --out "$OUT/train-lora" --fresh --json
  [ -f "$OUT/lora.log" ] && step lora-result $HELPER train-result "$OUT/lora.log" --name lora
  step qlora $TUNEWISE train "$OUT/task.yaml" --method qlora --out "$OUT/train-qlora" --fresh --json
  [ -f "$OUT/qlora.log" ] && step qlora-result $HELPER train-result "$OUT/qlora.log" --name qlora
  ACCELERATE="$PY -m accelerate.commands.launch"
  if [ "$NGPU" -ge 2 ]; then
    step ddp-config $HELPER accelerate-config --kind ddp --num-processes "$NGPU" --out "$OUT/ddp.yaml" --layer-class "$LAYER_CLASS"
    step ddp $ACCELERATE --config_file "$OUT/ddp.yaml" -m tunewise.cli train "$OUT/task.yaml" --out "$OUT/train-ddp" --fresh --json
  else
    # accelerate's --multi_gpu wants 2 processes; torchrun with one still wraps the model in DDP
    step ddp $PY -m torch.distributed.run --nproc_per_node 1 -m tunewise.cli train "$OUT/task.yaml" --out "$OUT/train-ddp" --fresh --json
  fi
  [ -f "$OUT/ddp.log" ] && step ddp-result $HELPER train-result "$OUT/ddp.log" --name "ddp-$NGPU-gpu"
  step fsdp-config $HELPER accelerate-config --kind fsdp --num-processes "$NGPU" --out "$OUT/fsdp.yaml" --layer-class "$LAYER_CLASS"
  step fsdp $ACCELERATE --config_file "$OUT/fsdp.yaml" -m tunewise.cli train "$OUT/task.yaml" --out "$OUT/train-fsdp" --fresh --json
  [ -f "$OUT/fsdp.log" ] && step fsdp-result $HELPER train-result "$OUT/fsdp.log" --name "fsdp-$NGPU-gpu"
fi

echo
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "gpu_check.sh: ${#FAILED[@]} step(s) failed: ${FAILED[*]} (logs in $OUT)"
  exit 1
fi
echo "gpu_check.sh: all steps passed${SKIPPED[*]:+ (skipped: ${SKIPPED[*]})} (logs in $OUT)"
