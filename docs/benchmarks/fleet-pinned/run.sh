#!/bin/bash
# The fleet benchmark on a quiet 16-core machine, the build before and this one side by side, each pinned to its
# own cores: 2 (this project's machines) and 6 (docs/loadtest-fleet.md#the-notify-lock-and-quiet-pinned-cores).
# Run from the repository root with .bench/ holding: site.tar.xz (the broker's and the load test's dependencies,
# unpacked wheels, for a machine with no package index), base/ (the files of the build before that differ from
# this one) and added.txt (the files this build added). $OUT is where the JSON and logs go.
set -u
mkdir -p /tmp/site && tar -C /tmp/site -xJf .bench/site.tar.xz || exit 1
id pgserver >/dev/null 2>&1 || useradd -s /bin/bash pgserver
nproc; python3 --version
NEW=$PWD; BASE=/tmp/basetree
rm -rf $BASE && mkdir -p $BASE && cp -r broker proto loadtest gpu_agent thin_client tests pyproject.toml $BASE/ && cp -r .bench/base/. $BASE/ && (cd $BASE && xargs rm -f < $NEW/.bench/added.txt)
run() { # name tree cpus workers rate
  ( cd "$2" && PYTHONUNBUFFERED=1 PYTHONPATH="$2:$2/proto:/tmp/site" taskset -c "$3" timeout 520 python3 -m loadtest fleet \
      --rate "$5" --duration 60 --workers "$4" --json "$OUT/$1.json" --no-progress > "$OUT/$1.log" 2>&1
    echo "$1 rc=$?"; tail -3 "$OUT/$1.log" )
}
run base2 "$BASE" 0,1 2 "${RATE2:-220}" &
run new2 "$NEW" 2,3 2 "${RATE2:-220}" &
run base6 "$BASE" 4-9 4 "${RATE6:-900}" &
run new6 "$NEW" 10-15 4 "${RATE6:-900}" &
wait
