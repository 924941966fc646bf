#!/usr/bin/env bash
# bench/restore_bench.sh — how long a restore takes: the seed's manual recipe step by step
# against `pgbak restore --replay`, interleaved in one run on the same backup.
#
# Usage (as root, on Debian 12):  bench/restore_bench.sh [-r ROUNDS] [-s SCALE] [-m RANDOM_MB] [-k]
#   -r ROUNDS     restores per method (default 3), alternating which method goes first
#   -s SCALE      pgbench scale of the fixture (default 40: about 600 MB of tables and indexes)
#   -m RANDOM_MB  MB of random hex text added to the fixture (default 600): data zstd cannot
#                 shrink to nothing, unlike pgbench's zero-filled filler
#   -k            keep the work directory (default: removed at exit)
#
# What it does:
#  1. installs what is missing (postgresql-15, zstd, GNU time) and builds pgbak in release mode;
#  2. makes the fixture: a throwaway PostgreSQL 15 cluster (as the `postgres` OS user, private
#     port and socket directory) archiving with `pgbak wal %p` into its own $PGBAK;
#     `pgbench -i -s SCALE` plus a table of random text, then `pgbak sync --base`, then two
#     updates of a quarter of pgbench_accounts each, so that at least 64 WAL segments follow the
#     base backup; the cluster is stopped and everything archived;
#  3. per round, with the page cache dropped before every restore (both methods read cold):
#     - seed: `mkdir -m700`, `tar -C d -xf base.tzst`, `zstd -d --output-dir-flat d/pg_wal
#       pg_wal/*`, `postgres --single -F -D d < /dev/null`, `sync -f d`, each step timed;
#     - pgbak: `pgbak restore d --from DIR --replay --json` (its own timings: prepare = base
#       extraction + WAL decompression, which run at once; replay; sync), timed as a whole and
#       with GNU time for the peak RSS;
#  4. prints per method the median of each step, and the two ratios the project targets:
#     pgbak's prepare / (seed's tar + zstd -d)  (target <= 0.5), and
#     pgbak's whole restore / the seed's whole recipe  (target <= 0.7).
# Absolute times move with the machine's load; compare figures from the same run only.
set -euo pipefail

rounds=3; scale=40; random_mb=600; keep=0
while getopts "r:s:m:kh" opt; do
  case $opt in
    r) rounds=$OPTARG ;; s) scale=$OPTARG ;; m) random_mb=$OPTARG ;; k) keep=1 ;;
    *) sed -n '2,29s/^# \{0,1\}//p' "$0"; exit 0 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "restore_bench: run as root (PostgreSQL runs as the postgres user)" >&2; exit 2; }

here=$(cd "$(dirname "$0")" && pwd); top=$(dirname "$here")
bin=/usr/lib/postgresql/15/bin; port=55498
work=$(mktemp -d /tmp/pgbak-restore-bench.XXXXXX); chmod 755 "$work"
socket=$work/socket; data=$work/data; pgbak_home=$work/home
log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }
as_pg() { runuser -u postgres -- "$@"; }

cleanup() {
  [ -f "$data/postmaster.pid" ] && as_pg "$bin/pg_ctl" -D "$data" -m immediate -w stop > /dev/null 2>&1 || true
  if [ "$keep" -eq 0 ]; then rm -rf "$work"; else log "kept $work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

missing=()
[ -x "$bin/initdb" ] || missing+=(postgresql-15)
command -v zstd > /dev/null || missing+=(zstd)
[ -x /usr/bin/time ] || missing+=(time)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" > /dev/null
fi
log "building pgbak (release)"
(cd "$top" && cargo build --release --quiet)
install -m 755 "$top/target/release/pgbak" "$work/pgbak"

log "making the fixture: pgbench -s $scale and $random_mb MB of random text"
mkdir -p "$socket" "$data" "$pgbak_home"; chown postgres: "$socket" "$data" "$pgbak_home"; chmod 700 "$data" "$pgbak_home"
as_pg env PGBAK="$pgbak_home" "$work/pgbak" init > /dev/null
ln -sf /bin/true "$pgbak_home/scripts/backup"
# One base backup, then only WAL: no base backup may become due while the fixture is made.
cat > "$pgbak_home/config.toml" <<EOF
[base]
max_wal_ratio = 1000.0
[pg_basebackup]
path = "$bin/pg_basebackup"
extra_args = ["--checkpoint=fast"]
EOF
chown -R postgres: "$pgbak_home"
as_pg "$bin/initdb" -D "$data" -U postgres -E UTF8 --locale=C.UTF-8 --no-instructions > "$work/initdb.log"
cat >> "$data/postgresql.conf" <<EOF
port = $port
unix_socket_directories = '$socket'
listen_addresses = ''
wal_level = replica
archive_mode = on
archive_command = 'PGBAK=$pgbak_home PGHOST=$socket PGPORT=$port PGUSER=postgres $work/pgbak wal %p'
shared_buffers = 256MB
max_wal_size = 4GB
EOF
touch "$work/server.log"; chown postgres: "$work/server.log"
as_pg "$bin/pg_ctl" -D "$data" -l "$work/server.log" -w start > /dev/null
sql() { as_pg "$bin/psql" -h "$socket" -p "$port" -U postgres -X -Atq -d bench -c "$1"; }
as_pg "$bin/psql" -h "$socket" -p "$port" -U postgres -X -Atq -d postgres -c "create database bench"
as_pg "$bin/pgbench" -h "$socket" -p "$port" -U postgres -i -q -s "$scale" bench >> "$work/pgbench.log" 2>&1
# 1 KiB of random hex per row: about half of it survives zstd.
sql "create table random_text as select i, (select string_agg(md5(random()::text || i || g), '') from generate_series(1, 32) g) as t from generate_series(1, $random_mb * 1024) i"
sql checkpoint
log "base backup (pgbak sync --base)"
as_pg env PGBAK="$pgbak_home" PGHOST="$socket" PGPORT="$port" PGUSER=postgres "$work/pgbak" sync --base > /dev/null
log "WAL after the base backup: two updates of a quarter of pgbench_accounts"
# A quarter of the rows, twice: every page gets a full-page image once, about 70 segments.
sql "update pgbench_accounts set abalance = abalance + 1 where aid % 4 = 0"
sql "update pgbench_accounts set abalance = abalance + 1 where aid % 4 = 1"
sql "select pg_switch_wal()" > /dev/null
last=$(sql "select pg_walfile_name(pg_current_wal_lsn())")
sql "select pg_switch_wal()" > /dev/null
for _ in $(seq 600); do
  done_up_to=$(sql "select coalesce(last_archived_wal, '') from pg_stat_archiver")
  [[ "$done_up_to" > "$last" || "$done_up_to" == "$last" ]] && break
  sleep 0.5
done
expected=$(sql "select sum(abalance) from pgbench_accounts")
as_pg "$bin/pg_ctl" -D "$data" -m fast -w stop > /dev/null
as_pg env PGBAK="$pgbak_home" "$work/pgbak" wait 600 > /dev/null || true
backup=$(readlink -f "$pgbak_home/current")
segments=$(find "$backup/pg_wal" -name '[0-9A-F]*.zst' ! -name '*.*.zst' | wc -l)
base_bytes=$(stat -c %s "$backup/base.tzst")
log "fixture: base.tzst $((base_bytes >> 20)) MiB compressed, $segments WAL segments in $backup"
[ "$segments" -ge 64 ] || log "warning: fewer than 64 segments; raise -s"

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
now() { echo "$EPOCHREALTIME"; }
ms() { echo $(( (${2/./} - ${1/./}) / 1000 )); }
results=$work/results.csv; echo "round,method,step,ms" > "$results"
restore_dir=$work/restore; mkdir -p "$restore_dir"; chown postgres: "$restore_dir"

seed() {
  local d=$restore_dir/seed-$1 t0 t1 t2 t3 t4
  drop_caches; t0=$(now)
  as_pg mkdir -m700 "$d"
  as_pg tar -C "$d" -xf "$backup/base.tzst"; t1=$(now)
  as_pg zstd -q -d --output-dir-flat "$d/pg_wal" "$backup"/pg_wal/*; t2=$(now)
  as_pg "$bin/postgres" --single -F -D "$d" < /dev/null > "$work/seed-$1.log" 2>&1; t3=$(now)
  as_pg sync -f "$d"; t4=$(now)
  printf '%s,seed,%s,%s\n' "$1" tar "$(ms "$t0" "$t1")" "$1" zstd_d "$(ms "$t1" "$t2")" \
    "$1" replay "$(ms "$t2" "$t3")" "$1" sync "$(ms "$t3" "$t4")" "$1" total "$(ms "$t0" "$t4")" >> "$results"
  rm -rf "$d"
}
pgbak_restore() {
  local d=$restore_dir/pgbak-$1 t0 t1
  drop_caches; t0=$(now)
  as_pg /usr/bin/time -f %M -o "$restore_dir/rss-$1" "$work/pgbak" restore "$d" --from "$backup" --replay --json --pg-bin "$bin" > "$work/pgbak-$1.json"
  t1=$(now)
  python3 - "$work/pgbak-$1.json" "$1" "$(ms "$t0" "$t1")" "$(cat "$restore_dir/rss-$1")" >> "$results" <<'EOF'
import json, sys
report, round_, total, rss = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3], sys.argv[4]
timings = report["timings_ms"]
for step in ("prepare", "replay", "sync"):
    print(f"{round_},pgbak,{step},{timings[step]}")
print(f"{round_},pgbak,total,{total}")
print(f"{round_},pgbak,rss_kib,{rss}")
EOF
  rm -rf "$d"
}

for ((round = 1; round <= rounds; round++)); do
  log "round $round/$rounds"
  if (( round % 2 )); then seed "$round"; pgbak_restore "$round"; else pgbak_restore "$round"; seed "$round"; fi
done

python3 - "$results" "$rounds" "$((base_bytes >> 20))" "$segments" <<'EOF'
import csv, statistics as st, sys
from collections import defaultdict
rows, rounds, base_mib, segments = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
t = defaultdict(list); by_round = defaultdict(dict)
for r in csv.DictReader(open(rows)):
    t[(r["method"], r["step"])].append(int(r["ms"])); by_round[r["round"]][(r["method"], r["step"])] = int(r["ms"])
med = lambda m, s: st.median(t[(m, s)])
print(f"{rounds} rounds; base.tzst {base_mib} MiB compressed; {segments} WAL segments; page cache dropped before each restore\n")
print("| method | tar -x | zstd -d WAL | prepare (extract + WAL) | replay | sync | total |")
print("|---|---:|---:|---:|---:|---:|---:|")
print(f"| seed recipe | {med('seed','tar')/1e3:.1f} s | {med('seed','zstd_d')/1e3:.1f} s | {(med('seed','tar')+med('seed','zstd_d'))/1e3:.1f} s | {med('seed','replay')/1e3:.1f} s | {med('seed','sync')/1e3:.1f} s | {med('seed','total')/1e3:.1f} s |")
print(f"| pgbak restore --replay | | | {med('pgbak','prepare')/1e3:.1f} s | {med('pgbak','replay')/1e3:.1f} s | {med('pgbak','sync')/1e3:.1f} s | {med('pgbak','total')/1e3:.1f} s |")
prep = [r[("pgbak","prepare")] / (r[("seed","tar")] + r[("seed","zstd_d")]) for r in by_round.values()]
whole = [r[("pgbak","total")] / r[("seed","total")] for r in by_round.values()]
print(f"\nprepare ratio (pgbak prepare / seed tar + zstd -d), median of rounds: {st.median(prep):.2f}  (target <= 0.5)")
print(f"whole restore ratio (pgbak / seed recipe), median of rounds: {st.median(whole):.2f}  (target <= 0.7)")
print(f"peak RSS of pgbak restore --replay: {st.median(t[('pgbak','rss_kib')]) / 1024:.1f} MiB (the largest process of the tree: postgres --single)")
EOF
