#!/bin/sh
# Teacher-forced argmax of two models over stories-style passages (one a line of
# TEXTS, first 127 tokens of each): how often CAND's argmax equals REF's, the
# worst relative RMS of CAND's logits against REF's, and each model's share of
# argmaxes equal to the text's next token. BENCHMARKS.md's LM-head comparison.
# usage: head-agreement.sh EDGELLM REF.gguf CAND.gguf [TEXTS]
set -eu
E=$1 R=$2 C=$3 T=${4:-$(dirname "$0")/stories-texts.txt}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
while IFS= read -r line; do
  [ -n "$line" ] || continue
  ids=$(printf '%s\n' "$line" | "$E" tokenize -m "$R" 2>/dev/null | tr ' ' '\n' | head -127 | tr '\n' ' ')
  "$E" logits -m "$R" --ids "$ids" 2>/dev/null > "$tmp/ref"
  "$E" logits -m "$C" --ids "$ids" 2>/dev/null > "$tmp/cand"
  IDS="$ids" python3 - "$tmp/ref" "$tmp/cand" <<'PY'
import math, os, sys
rd = lambda p: [[float(x) for x in l.split()] for l in open(p) if l.strip()]
a, b = rd(sys.argv[1]), rd(sys.argv[2])
ids = [int(x) for x in os.environ["IDS"].split()]
am = lambda r: max(range(len(r)), key=r.__getitem__)
num = sum((u - v) ** 2 for x, y in zip(a, b) for u, v in zip(x, y))
den = sum(u * u for x in a for u in x)
n = len(ids) - 1
print(len(a), sum(am(x) == am(y) for x, y in zip(a, b)), math.sqrt(num / den), n,
      sum(am(a[i]) == ids[i + 1] for i in range(n)), sum(am(b[i]) == ids[i + 1] for i in range(n)))
PY
done < "$T" | awk '{p+=$1; k+=$2; r=($3>r)?$3:r; n+=$4; ra+=$5; ca+=$6}
  END {printf "argmax agreement %d/%d (%.2f%%), worst relative RMS %.4f; next token right: ref %.2f%%, cand %.2f%% of %d\n", k, p, 100*k/p, r, 100*ra/n, 100*ca/n, n}'
