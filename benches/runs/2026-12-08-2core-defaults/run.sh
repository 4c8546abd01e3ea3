#!/usr/bin/env bash
# One sitting: GEMM, training (Kiln vs scikit-learn), small-table softmax,
# TPC-H SF1 embedded + 2-executor cluster. Results under $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/bench/out}; mkdir -p $OUT
T=$HOME/.cache/kiln/target/release
cd /work/main
echo "== $(date -u) $(git rev-parse --short HEAD)" | tee $OUT/meta.txt
nproc >> $OUT/meta.txt; grep -m1 "model name" /proc/cpuinfo >> $OUT/meta.txt

# GEMM
CARGO_TARGET_DIR=/tmp/kk-target cargo run --release -q -p kiln-kernels --example gemm_bench > $OUT/gemm_kiln.csv 2>&1
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 benches/gemm/numpy_gemm.py > $OUT/gemm_numpy_avx512.csv 2>&1
python3 benches/gemm/numpy_gemm.py > $OUT/gemm_numpy_haswell.csv 2>&1
CARGO_TARGET_DIR=/tmp/kk-target cargo run --release -q -p kiln-kernels --example gemm_bench > $OUT/gemm_kiln_2.csv 2>&1

# Training: 10M x 32, noisy label
[ -d /tmp/kt10m ] || $T/train gen --rows 10000000 --noise 0.86 --lake /tmp/kt10m > $OUT/train_gen.txt 2>&1
$T/train run --lake /tmp/kt10m --options "" > $OUT/train_kiln_lbfgs.csv 2> $OUT/train_kiln_lbfgs.err
$T/train run --lake /tmp/kt10m > $OUT/train_kiln_sgd1.csv 2> $OUT/train_kiln_sgd1.err
$T/train run --lake /tmp/kt10m --options "optimizer = 'sgd', epochs = 5, batch_size = 1024, learning_rate = 0.05" > $OUT/train_kiln_sgd5.csv 2> $OUT/train_kiln_sgd5.err
python3 benches/train/sklearn_train.py /tmp/kt10m --solver lbfgs > $OUT/train_sklearn_lbfgs.csv 2>&1
python3 benches/train/sklearn_train.py /tmp/kt10m > $OUT/train_sklearn_sgd.csv 2>&1

# Small table: iris (120 training rows), softmax, 300 Adam epochs and the default
rm -rf /tmp/iris-lake
cat > /tmp/bench/iris.sql <<SQL
CREATE EXTERNAL TABLE iris_csv STORED AS CSV LOCATION '/work/main/tests/quality/data/iris_train.csv' OPTIONS ('format.has_header' 'true');
CREATE TABLE iris AS SELECT * FROM iris_csv;
SQL
$T/kiln --lake /tmp/iris-lake --allow-path /work/main/tests/quality/data run /tmp/bench/iris.sql > /dev/null 2>&1
for opts in "optimizer = 'adam', epochs = 300, learning_rate = 0.05" ""; do
  o=""; [ -n "$opts" ] && o="OPTIONS ($opts)"
  /usr/bin/time -f "%e s wall, %M KiB" $T/kiln --lake /tmp/iris-lake sql -c "TRAIN MODEL OR REPLACE iris_m USING softmax_regression $o LABEL label AS SELECT * FROM iris" >> $OUT/iris_softmax.txt 2>&1
done
