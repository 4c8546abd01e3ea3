#!/usr/bin/env bash
set -uo pipefail
OUT=${OUT:-/tmp/bench/out}; mkdir -p $OUT
T=$HOME/.cache/kiln/target/release
cd /work/main
$T/tpch run --sf 1 --dir /tmp/tpch -i 2 --csv $OUT/tpch_sf1_embedded.csv > $OUT/tpch_sf1_embedded.txt 2>&1
export KILN_TOKEN=bench-token
$T/kiln --lake /tmp/tpch/sf1/lake scheduler --bind 127.0.0.1:50250 > $OUT/scheduler.log 2>&1 &
S=$!; sleep 2
$T/kiln --lake /tmp/tpch/sf1/lake executor --scheduler 127.0.0.1:50250 --bind 127.0.0.1:50251 --slots 2 > $OUT/executor1.log 2>&1 &
E1=$!
$T/kiln --lake /tmp/tpch/sf1/lake executor --scheduler 127.0.0.1:50250 --bind 127.0.0.1:50252 --slots 2 > $OUT/executor2.log 2>&1 &
E2=$!; sleep 3
$T/tpch run --sf 1 --dir /tmp/tpch -i 2 --cluster df://127.0.0.1:50250 --token bench-token --csv $OUT/tpch_sf1_cluster.csv > $OUT/tpch_sf1_cluster.txt 2>&1
kill $S $E1 $E2; wait
