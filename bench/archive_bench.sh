#!/usr/bin/env bash
# bench/archive_bench.sh — how long one archive_command call takes per 16 MiB WAL segment:
# `pgbak wal` against its peers, interleaved in one run on the same real segments.
#
# Usage (as root, on Debian 12):  bench/archive_bench.sh [-r ROUNDS] [-n SEGMENTS] [-k]
#   -r ROUNDS    passes over all segments (default 3); each pass uses fresh destinations
#   -n SEGMENTS  segments sampled from the pgbench run (default 32)
#   -k           keep the work directory (default: removed at exit)
#
# What it does:
#  1. installs what is missing (postgresql-15, pgbackrest, zstd, GNU time) and builds pgbak
#     in release mode;
#  2. makes real WAL: a throwaway PostgreSQL 15 cluster (run as the `postgres` OS user, private
#     port and socket directory) with archive_mode=on copying every segment aside, then
#     `pgbench -i -s 50` (COPY + index builds), a CHECKPOINT, `pgbench -c 4 -j 2 -T 60` and a few
#     `pg_switch_wal()` for nearly empty segments; it samples SEGMENTS segments evenly;
#  3. creates a pgBackRest stanza for that cluster (pgBackRest checks every segment against it);
#  4. per segment and round, runs every method once into its own fresh destination, rotating
#     the order (A B C D, B C D A, ...) so drift on a shared machine hits all methods alike;
#     every call runs through `sh -c` as PostgreSQL runs archive_command, as the postgres user;
#  5. prints, per method: median and p90 ms per segment, the median ratio to pgBackRest zst-1
#     and the paired ratio (median over segments of t(method)/t(pgBackRest) in the same round),
#     compressed/original size, and the peak RSS of one `pgbak wal` call.
#
# Methods: pgbr-zst1 (pgBackRest archive-push, zst level 1, sync), zstd1-fsync (zstd -1 CLI,
# then fsync of the file and its directory), cp-fsync (cp, then the same fsync), and pgbak
# (`pgbak wal`, with [sync] autostart = false so no sync process competes for the CPU), and
# pgbak-2threads (the same with `wal.compression_threads = 2`, zstd's worker threads).
# Absolute times move with the machine's load; compare figures from the same run only.
set -euo pipefail

rounds=3; count=32; keep=0
while getopts "r:n:kh" opt; do
  case $opt in
    r) rounds=$OPTARG ;; n) count=$OPTARG ;; k) keep=1 ;;
    *) sed -n '2,30s/^# \{0,1\}//p' "$0"; exit 0 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "archive_bench: run as root (PostgreSQL runs as the postgres user)" >&2; exit 2; }

here=$(cd "$(dirname "$0")" && pwd); top=$(dirname "$here")
bin=/usr/lib/postgresql/15/bin; port=55499
work=$(mktemp -d /tmp/pgbak-bench.XXXXXX); chmod 755 "$work"
socket=$work/socket; data=$work/data; walcopy=$work/wal-archive; samples=$work/samples
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
command -v pgbackrest > /dev/null || missing+=(pgbackrest)
command -v zstd > /dev/null || missing+=(zstd)
[ -x /usr/bin/time ] || missing+=(time)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" > /dev/null
fi
log "building pgbak (release)"
(cd "$top" && cargo build --release --quiet)
install -m 755 "$top/target/release/pgbak" "$work/pgbak"

log "making WAL with a throwaway cluster and pgbench"
mkdir -p "$socket" "$walcopy" "$samples" "$data"; chown postgres: "$socket" "$walcopy" "$samples" "$data"; chmod 700 "$data"
as_pg "$bin/initdb" -D "$data" -U postgres -E UTF8 --locale=C.UTF-8 --no-instructions > "$work/initdb.log"
cat >> "$data/postgresql.conf" <<EOF
port = $port
unix_socket_directories = '$socket'
listen_addresses = ''
wal_level = replica
archive_mode = on
archive_command = 'cp %p $walcopy/%f'
shared_buffers = 256MB
max_wal_size = 4GB
EOF
touch "$work/server.log"; chown postgres: "$work/server.log"
as_pg "$bin/pg_ctl" -D "$data" -l "$work/server.log" -w start > /dev/null
sql() { as_pg "$bin/psql" -h "$socket" -p "$port" -U postgres -X -Atq -d "${db:-postgres}" -c "$1"; }
pgbench() { as_pg "$bin/pgbench" -h "$socket" -p "$port" -U postgres "$@" bench >> "$work/pgbench.log" 2>&1; }
sql "create database bench"
pgbench -i -s 50
sql checkpoint
pgbench -c 4 -j 2 -T 60
for i in 1 2 3 4; do db=bench sql "create table if not exists t_switch(i int); insert into t_switch values ($i); select pg_switch_wal()" > /dev/null; done
last=$(sql "select pg_walfile_name(pg_current_wal_lsn())")
sql "select pg_switch_wal()" > /dev/null
for _ in $(seq 120); do   # until the archiver has copied everything up to $last
  done_up_to=$(sql "select coalesce(last_archived_wal, '') from pg_stat_archiver")
  [[ "$done_up_to" > "$last" || "$done_up_to" == "$last" ]] && break
  sleep 0.5
done
log "creating the pgBackRest stanza"
cat > "$work/pgbackrest.conf" <<EOF
[global]
repo1-path=$work/pgbr-template
log-path=$work/pgbr-log
lock-path=$work/pgbr-lock
[bench]
pg1-path=$data
pg1-port=$port
pg1-socket-path=$socket
pg1-user=postgres
EOF
mkdir -p "$work/pgbr-template" "$work/pgbr-log" "$work/pgbr-lock"
chown postgres: "$work/pgbr-template" "$work/pgbr-log" "$work/pgbr-lock" "$work/pgbackrest.conf"
as_pg pgbackrest --config="$work/pgbackrest.conf" --stanza=bench stanza-create > /dev/null
as_pg "$bin/pg_ctl" -D "$data" -m fast -w stop > /dev/null   # pgBackRest still reads pg_control

# Sample full 16 MiB segments evenly (history files and the like are not segments).
mapfile -t all < <(find "$walcopy" -type f -regextype posix-extended -regex '.*/[0-9A-F]{24}' -size 16M | sort)
[ ${#all[@]} -ge "$count" ] || count=${#all[@]}
for ((i = 0; i < count; i++)); do
  cp "${all[i * ${#all[@]} / count]}" "$samples/"
done
chown -R postgres: "$samples"
mapfile -t segments < <(find "$samples" -type f | sort)
log "${#segments[@]} segments of 16 MiB sampled from ${#all[@]}"
cat "${segments[@]}" > /dev/null   # page cache: every method reads from memory

methods=(pgbr-zst1 zstd1-fsync cp-fsync pgbak pgbak-2threads)
template() {   # the archive_command of each method; %p = segment, %d = destination, %f = name
  case $1 in
    pgbr-zst1) echo "pgbackrest --config=$work/pgbackrest.conf --stanza=bench --repo1-path=%d --compress-type=zst --compress-level=1 archive-push %p" ;;
    zstd1-fsync) echo "zstd -1 -q -o %d/%f.zst %p && sync %d/%f.zst %d" ;;
    cp-fsync) echo "cp %p %d/%f && sync %d/%f %d" ;;
    pgbak | pgbak-2threads) echo "PGBAK=%d $work/pgbak wal %p" ;;
  esac
}
prepare() {   # a fresh destination for method $1 in $2 (untimed)
  mkdir -p "$2"; chown postgres: "$2"; chmod 700 "$2"
  case $1 in
    pgbr-zst1) cp -a "$work/pgbr-template/." "$2/" ;;
    pgbak | pgbak-2threads)
      as_pg env PGBAK="$2" "$work/pgbak" init > /dev/null
      printf '[sync]\nautostart = false\n' > "$2/config.toml"
      # The same call with zstd's own worker threads, to compare with the default.
      [ "$1" = pgbak-2threads ] && printf '[wal]\ncompression_threads = 2\n' >> "$2/config.toml"
      chown postgres: "$2/config.toml" ;;
  esac
}
bytes_under() { find "$1" -type f ! -name pgbak.lock ! -name '*.conf' ! -name config.toml ! -path '*/scripts/*' ! -path '*/backup.info*' ! -path '*/archive.info*' -printf '%s\n' | awk '{s += $1} END {print s + 0}'; }

csv=$work/calls.csv; echo "round,segment,method,micros,input_bytes" > "$csv"
for ((round = 1; round <= rounds; round++)); do
  for m in "${methods[@]}"; do rm -rf "$work/dest-$m"; prepare "$m" "$work/dest-$m"; done
  for ((s = 0; s < ${#segments[@]}; s++)); do
    segment=${segments[s]}; name=$(basename "$segment")
    for ((k = 0; k < ${#methods[@]}; k++)); do
      m=${methods[(k + s + round) % ${#methods[@]}]}
      command=$(template "$m"); command=${command//%p/$segment}; command=${command//%d/$work/dest-$m}; command=${command//%f/$name}
      t0=$EPOCHREALTIME
      as_pg sh -c "$command" > /dev/null 2>> "$work/errors.log" || { echo "archive_bench: $m failed on $name (see $work/errors.log)" >&2; exit 1; }
      t1=$EPOCHREALTIME
      echo "$round,$s,$m,$(( ${t1/./} - ${t0/./} )),16777216" >> "$csv"
    done
    printf '\rround %d/%d segment %d/%d ' "$round" "$rounds" "$((s + 1))" "${#segments[@]}" >&2
  done
  for m in "${methods[@]}"; do echo "$m,$(bytes_under "$work/dest-$m")" >> "$work/output-bytes.csv"; done
done
echo >&2

# Peak RSS of one `pgbak wal` call on a 16 MiB segment (GNU time: maximum resident set, KiB).
rm -rf "$work/dest-rss"; prepare pgbak "$work/dest-rss"
rss_kib=$(as_pg env PGBAK="$work/dest-rss" /usr/bin/time -f %M "$work/pgbak" wal "${segments[0]}" 2>&1 >/dev/null | tail -n 1)

python3 - "$csv" "$work/output-bytes.csv" "$rss_kib" "$rounds" "${#segments[@]}" <<'EOF'
import csv, statistics as st, sys
from collections import defaultdict
calls, sizes, rss_kib, rounds, nseg = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
times = defaultdict(list); by_call = {}
for row in csv.DictReader(open(calls)):
    us = int(row["micros"]); times[row["method"]].append(us)
    by_call[(row["round"], row["segment"], row["method"])] = us
out = defaultdict(list)
for line in open(sizes):
    m, b = line.strip().split(","); out[m].append(int(b))
def q(xs, p):
    xs = sorted(xs); k = (len(xs) - 1) * p; f = int(k)
    return xs[f] + (xs[min(f + 1, len(xs) - 1)] - xs[f]) * (k - f)
base = "pgbr-zst1"; base_median = st.median(times[base])
print(f"{rounds} rounds x {nseg} segments of 16 MiB, {len(times[base])} calls per method, interleaved\n")
print("| method | median ms/seg | p90 ms | median vs pgbr-zst1 | paired ratio vs pgbr-zst1 | vs zstd1-fsync (paired) | compressed/original |")
print("|---|---:|---:|---:|---:|---:|---:|")
for m in ["pgbr-zst1", "zstd1-fsync", "cp-fsync", "pgbak", "pgbak-2threads"]:
    paired = [by_call[(r, s, m)] / by_call[(r, s, base)] for (r, s, mm) in by_call if mm == m]
    paired_zstd = [by_call[(r, s, m)] / by_call[(r, s, "zstd1-fsync")] for (r, s, mm) in by_call if mm == m]
    ratio = st.median(out[m]) / (16777216 * nseg)
    print(f"| {m} | {st.median(times[m])/1e3:.1f} | {q(times[m], .9)/1e3:.1f} | {st.median(times[m])/base_median:.2f} "
          f"| {st.median(paired):.2f} | {st.median(paired_zstd):.2f} | {ratio:.4f} |")
size_vs_zstd = st.median(out["pgbak"]) / st.median(out["zstd1-fsync"])
print(f"\npgbak compressed size vs zstd -1: {size_vs_zstd:.3f} (the pgbak figure includes its journal records' share: none, pgbak.lock is excluded)")
print(f"peak RSS of one `pgbak wal` call: {rss_kib / 1024:.1f} MiB")
print("\ntargets: pgbak median <= 0.40 x pgbr-zst1, <= 0.60 x zstd1-fsync, size within 5 % of zstd -1, RSS <= 64 MiB")
EOF
