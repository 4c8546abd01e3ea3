#!/usr/bin/env bash
set -uo pipefail
OUT=${OUT:-/tmp/bench/out}; mkdir -p $OUT
T=$HOME/.cache/kiln/target/release
cd /work/main
rm -rf /tmp/ans-embedded /tmp/ans-cluster
$T/tpch run --sf 1 --dir /tmp/tpch -i 1 --answers /tmp/ans-embedded > $OUT/answers_embedded.txt 2>&1
export KILN_TOKEN=bench-token
$T/kiln --lake /tmp/tpch/sf1/lake scheduler --bind 127.0.0.1:50250 > $OUT/scheduler2.log 2>&1 &
S=$!; sleep 2
$T/kiln --lake /tmp/tpch/sf1/lake executor --scheduler 127.0.0.1:50250 --bind 127.0.0.1:50251 --slots 2 > /dev/null 2>&1 &
E1=$!
$T/kiln --lake /tmp/tpch/sf1/lake executor --scheduler 127.0.0.1:50250 --bind 127.0.0.1:50252 --slots 2 > /dev/null 2>&1 &
E2=$!; sleep 3
$T/tpch run --sf 1 --dir /tmp/tpch -i 1 --cluster df://127.0.0.1:50250 --token bench-token --answers /tmp/ans-cluster > $OUT/answers_cluster.txt 2>&1
kill $S $E1 $E2; wait
python3 benches/tpch/duckdb_tpch.py --csv /tmp/tpch/sf1/csv --sf 1 --iterations 1 --threads 2 --compare /tmp/ans-embedded --compare /tmp/ans-cluster > $OUT/duckdb_compare.txt 2>&1
echo "duckdb exit $?" >> $OUT/duckdb_compare.txt
