#!/bin/bash
# usage: qd-bench.sh label1=bin1 label2=bin2 ... ; env ROUNDS, PRESET, FORMATS
ROUNDS=${ROUNDS:-2}; PRESET=${PRESET:-mixtral-8x7b}; FORMATS=${FORMATS:-"bf16 fp8 mxfp4"}
for r in $(seq 1 $ROUNDS); do
 for f in $FORMATS; do
  for lb in "$@"; do
   l=${lb%%=*}; b=${lb#*=}
   out=/tmp/qd-x-$l-$f-$r
   load=$(cut -d' ' -f1 /proc/loadavg)
   $b bench --device cpu --no-peers --preset $PRESET --tokens 1 --min-seconds 1 --weights $f --out $out >/dev/null 2>&1
   ceil=$(grep -o 'copy [0-9.]* GB/s' $out/results.md)
   up=$(grep '| up_gemm |' $out/results.md | awk -F"|" "{print \$7 \"/\" \$8}")
   down=$(grep '| down_gemm |' $out/results.md | awk -F"|" "{print \$7 \"/\" \$8}")
   layer=$(grep "| layer |" $out/results.md | awk -F"|" "{print \$7 \"/\" \$8 \"|\" \$11 \"|\" \$12}")
   echo "$(date +%H:%M:%S) load $load $PRESET r$r $f $l | up $up | down $down | layer $layer | $ceil"
  done
 done
done
