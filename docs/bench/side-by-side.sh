#!/bin/sh
# Issue 18's CPU side-by-side, EdgeLLM and llama.cpp alternated in one run so
# both see the same minutes of a shared machine. Per round, per model, per
# thread count: `edgellm bench -m FILE --threads T -p 128 -n 256 --json`,
# then `llama-bench -m FILE... -t T -p 128 -n 128 -r 2` on the same file (for
# smollm-135m on llama.cpp's own files of that shape: pass several, the best
# counts). One line per pair: decode tok/s both, the ratio, prefill both,
# bandwidth_fraction, p99_p50_detrended against control_p99_p50 + 0.05,
# peak RSS. JSON of every run is kept in OUT.
# usage: side-by-side.sh EDGELLM LLAMA_BENCH OUT ROUNDS THREADS \
#          NAME=ours.gguf[,llama1.gguf,...] ...
# e.g. side-by-side.sh ./edgellm ~/llama.cpp/build/bin/llama-bench /tmp/sbs 3 "1 2" \
#        bitnet-2b=$S/bitnet-2b-tq2_0-q8_0.gguf smollm-135m=$S/smollm-135m-q2_0-q8_0.gguf,sm-tq2_0.gguf,sm-q4_0.gguf
set -eu
E=$1 L=$2 OUT=$3 R=$4 TS=$5; shift 5
mkdir -p "$OUT"
echo "# $(date -u +%FT%TZ) $(uname -m) $(nproc) CPUs; edgellm $("$E" version 2>/dev/null | head -1)"
echo "round model threads ours_tok_s llama_tok_s ratio ours_pp llama_pp pp_ratio bwf detrended control+0.05 rss_MB kernels"
for r in $(seq "$R"); do
  for spec in "$@"; do
    name=${spec%%=*} files=${spec#*=}
    ours=${files%%,*} theirs=${files#*,}
    [ "$theirs" = "$files" ] && theirs=$ours
    for t in $TS; do
      j="$OUT/$name-t$t-r$r.json"
      "$E" bench -m "$ours" --backend cpu --threads "$t" -p 128 -n 256 --json > "$j" 2>/dev/null
      args=""
      for f in $(echo "$theirs" | tr ',' ' '); do args="$args -m $f"; done
      # shellcheck disable=SC2086
      LD_LIBRARY_PATH=$(dirname "$L") "$L" $args -t "$t" -p 128 -n 128 -r 2 -o json > "$OUT/$name-t$t-r$r.llama.json" 2>/dev/null
      python3 - "$j" "$OUT/$name-t$t-r$r.llama.json" "$r" "$name" "$t" <<'PY'
import json, sys
o = json.load(open(sys.argv[1])); l = json.load(open(sys.argv[2]))
tg = max(x["avg_ts"] for x in l if x["n_gen"] > 0)
pp = max(x["avg_ts"] for x in l if x["n_prompt"] > 0)
d, p = o["decode_tok_per_s"], o["prefill_tok_per_s"]
print(sys.argv[3], sys.argv[4], sys.argv[5], f"{d:.1f} {tg:.2f} {d/tg:.2f}x {p:.1f} {pp:.1f} {p/pp:.2f}x",
      f"{o['bandwidth_fraction']:.3f} {o['p99_p50_detrended']:.3f} {o['control_p99_p50']+0.05:.3f}",
      f"{o['peak_rss_bytes']/1e6:.0f}", o.get("kernels", "?"))
PY
    done
  done
done
