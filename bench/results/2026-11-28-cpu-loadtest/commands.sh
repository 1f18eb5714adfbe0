#!/usr/bin/env bash
# The CPU numbers for the report: peak per policy, streams, both scenarios; plots.
set -u
cd /work/main/build
export OPENBLAS_NUM_THREADS=1; X=./exitrt; C="-m ../models/fmnist-mlp -d fashion-mnist:test --max-batch 64 --max-delay-ms 2 --slo-ms 20"
R=/tmp/ltres/cpu; mkdir -p $R
uptime > $R/uptime.txt
$X loadtest $C --find-peak --policy none --policy confidence:0.99 --policy confidence:0.9 --policy confidence:0.6 --policy fixed:0 --requests 10000 --output $R/peak.json > $R/peak.txt 2>&1
$X loadtest $C --find-peak --streams 2 --policy confidence:0.9 --requests 10000 --output $R/peak-2streams.json > $R/peak-2streams.txt 2>&1
$X loadtest $C --scenario load-step --points none,confidence:0.99,confidence:0.9,confidence:0.6,fixed:0 --duration 6 --output $R/step.json --timeline $R/step.csv > $R/step.txt 2>&1
$X loadtest $C --scenario shift --points confidence:0.99,confidence:0.9,confidence:0.6,fixed:0 --duration 6 --output $R/shift.json --timeline $R/shift.csv > $R/shift.txt 2>&1
uptime >> $R/uptime.txt
/usr/bin/python3 ../tools/plot_load.py $R/peak.json $R/peak-2streams.json $R/step.json $R/shift.json
OPENBLAS_NUM_THREADS=1 exitrt loadtest -m models/fmnist-cnn -d fashion-mnist:test --find-peak --slo-ms 200 -p none -p confidence:0.9 -p fixed:0 --max-batch 64 --max-delay-ms 5 --requests 3000 --output cnn_peak.json
OPENBLAS_NUM_THREADS=1 exitrt loadtest -m models/fmnist-cnn -d fashion-mnist:test --max-batch 64 --max-delay-ms 5 --slo-ms 200 --scenario load-step --qps 1000 --step-qps 2200 --points none,confidence:0.99,confidence:0.9,confidence:0.7,fixed:0 --duration 6 --output cnn_step.json
OPENBLAS_NUM_THREADS=1 exitrt loadtest -m models/fmnist-cnn -d fashion-mnist:test --max-batch 64 --max-delay-ms 5 --slo-ms 200 --scenario shift --shift contrast:5 --shift-fraction 0.5 --qps 1600 --points confidence:0.99,confidence:0.9,confidence:0.7,fixed:0 --duration 6 --output cnn_shift.json
