#!/bin/bash
# The fleet at 80% on 2 quiet pinned cores, tenant workers at niceness 0 and 10 side by side (twice each), and on 6
# cores at 900/s offered with niceness 10.
set -u
mkdir -p /tmp/site && tar -C /tmp/site -xJf .bench/site.tar.xz || exit 1
id pgserver >/dev/null 2>&1 || useradd -s /bin/bash pgserver
NEW=$PWD
run() { # name cpus workers rate nice
  ( cd "$NEW" && CLOUDSEAT_BROKER_TENANT_NICE="$5" PYTHONUNBUFFERED=1 PYTHONPATH="$NEW:$NEW/proto:/tmp/site" taskset -c "$2" \
      timeout 480 python3 -m loadtest fleet --rate "$4" --duration 60 --workers "$3" --json "$OUT/$1.json" --no-progress \
      > /dev/null 2> "/tmp/$1.err"
    rc=$?; echo "$1 rc=$rc"; [ $rc = 0 ] || tail -5 "/tmp/$1.err"; python3 -c "import json; d=json.load(open('$OUT/$1.json')); print('$1', d['starts_per_s'], d['echo_rps'], d['placed_ms_p50'], d['placed_ms_p99'], d['queue_wait_ms_p99'], d['errors'], d.get('placement_rounds',{}).get('rounds_per_s'))" )
}
run nice0a 0,1 2 220 0 &
run nice10a 2,3 2 220 10 &
run nice0b 4,5 2 220 0 &
run nice10b 6,7 2 220 10 &
run nice10six 8-13 4 900 10 &
wait
