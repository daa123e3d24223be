module edgetwin.bench/loadgen

go 1.26
