#!/usr/bin/env bash
# Trains the seven NATs of the paper's translation table at once on one GPU
# (configs/multi30k/gpu/, ~5 minutes each, sharing the card), scores each on
# test_2016_flickr, and times every row at batch 1 on the GPU.
#
# Run it inside a GPU bundle (`cargo xtask gpu-bundle --nat-inputs`), which
# holds the binary, run.sh, the configs, this script and the CPU pipeline's
# inputs: runs/teacher/multi30k (model, config, tokenizer), runs/distill/multi30k
# and data/multi30k. Results go to $OUT (default gpu_out/): logs, a tarball
# of every run's config, metrics, log and results, the latency table, and the
# EM + distillation model in 16 MB parts (`cat em_model.part_* >
# model.safetensors` puts it back together).
#   MINUTES=4.5 bash scripts/gpu_nat_table.sh
# (DEVICE=cpu MINUTES=0.3 SENTENCES=5 runs the same steps on the CPU, as a check.)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_out}
minutes=${MINUTES:-5}
device=${DEVICE:-cuda}
mkdir -p "$out" logs
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; ./run.sh info --device "$device"; } 2>&1 | tee "$out/info.txt"
./run.sh info --device "$device" >/dev/null 2>&1 || { echo "no $device: stopping" >&2; exit 1; }

variants="em vq em_raw vq_raw em_nc4 plain semhash"
for v in $variants; do
  ./run.sh train-nat --config configs/multi30k/gpu/nat_$v.toml --max-minutes "$minutes" --device "$device" >"logs/train_$v.log" 2>&1 &
done
wait
date
for v in $variants; do
  ( run=runs/nat/multi30k_${v}_gpu
    ./run.sh eval --run "$run" --latency-sentences 0 --device "$device"
    case $v in em|vq|plain) ./run.sh eval --run "$run" --latency-sentences 0 --rescore 10 --device "$device" ;; esac
  ) >"logs/eval_$v.log" 2>&1 &
done
wait
date
grep -h "BLEU|" logs/eval_*.log | tail -n 20
tar czf "$out/runs.tgz" logs runs/nat/*/config.toml runs/nat/*/metrics.jsonl runs/nat/*/log.txt runs/nat/*/results.json 2>/dev/null
split -b 16000000 runs/nat/multi30k_em_gpu/model.safetensors "$out/em_model.part_"
./run.sh bench-latency --list configs/multi30k/gpu/latency.toml --device "$device" --sentences "${SENTENCES:-200}" >logs/latency.log 2>&1
tail -n 30 logs/latency.log
tar czf "$out/latency.tgz" logs/latency.log runs/latency
date
