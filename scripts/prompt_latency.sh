#!/usr/bin/env bash
# Added latency of one caller prompt on /predict (docs/benchmarks.md "Caller prompts"): 11 sequential calls each way
# on messi5.jpg against a running gateway. Usage: scripts/prompt_latency.sh [URL] [IMAGE]
set -euo pipefail
URL=${1:-http://127.0.0.1:8080}
IMAGE=${2:-.cache/test-media/messi5.jpg}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)] * 1000}'; }
run() {  # $1: label, $2: query suffix builder (called with the call number)
  for i in $(seq 1 11); do
    curl -s -o /dev/null -w '%{time_total}\n' -F "file=@${IMAGE}" "${URL}/predict$($2 "$i")"
  done | median | xargs printf '%-34s median %6.1f ms\n' "$1"
}
none() { echo ""; }
cold() { echo "?prompts=a%20person%20smiling%20broadly%20take%20$1%20$RANDOM"; }  # a new prompt each call
cached() { echo "?prompts=a%20person%20smiling%20broadly"; }                      # the same prompt
curl -s -o /dev/null -F "file=@${IMAGE}" "${URL}/predict$(cached)"  # warm the cache for the cached run
run "no prompt" none
run "one new prompt (encoder call)" cold
run "one cached prompt" cached
