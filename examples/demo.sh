#!/usr/bin/env bash
# The pgbak demo: the main job end to end on a throwaway PostgreSQL 15 cluster.
#
#   sudo examples/demo.sh        (from a clone of this repository, on Debian 12)
#
# It installs what is missing (.ci/prerequisites: postgresql-15, zstd, a C compiler, Rust),
# builds pgbak, creates a cluster archiving with `archive_command = 'pgbak wal %p'`, generates
# load with pgbench, lets pgbak take the base backup and ship everything with an example backup
# script (examples/ship-to-directory) into an "offsite" directory, restores the offsite copy
# into a second data directory with stock tar and zstd (the README's recipe), and shows that the
# data match. Then it drops a table by mistake, ships that too, and undoes the mistake with one
# `pgbak restore --target-time` from the offsite copy alone (point-in-time recovery), showing
# the table back and the data equal. Last, `pgbak verify --all` checks every backup directory
# and `pgbak prune --keep 1 --dry-run` shows what retention would delete. It prints
# `pgbak status` along the way. Everything lives in one directory under
# /tmp, removed at the end, also when interrupted (Ctrl-C) or when a step fails.
#
# PostgreSQL refuses to run as root: as root, the servers and pgbak run as the `postgres` OS
# user; as any other user, as that user.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "installing what is missing"
.ci/prerequisites
# shellcheck disable=SC1091
command -v cargo >/dev/null 2>&1 || . "$HOME/.cargo/env"

step "building pgbak (cargo build --release)"
cargo build --release --locked --quiet

bin=/usr/lib/postgresql/15/bin
work=$(mktemp -d /tmp/pgbak-demo.XXXXXX)
chmod 755 "$work"
if [ "$(id -u)" -eq 0 ]; then
  as_pg() { runuser -u postgres -- "$@"; }
  chown postgres: "$work"
else
  as_pg() { "$@"; }
fi
data=$work/data restored=$work/restored pitr=$work/pitr socket=$work/socket
pgbak_dir=$work/pgbak offsite=$work/offsite
port=5432 restored_port=5433 pitr_port=5434 # on a private socket directory: no clash with other servers

cleanup() {
  trap - EXIT INT TERM
  step "cleaning up $work"
  for dir in "$pitr" "$restored" "$data"; do
    [ -f "$dir/postmaster.pid" ] && as_pg "$bin/pg_ctl" -D "$dir" -m immediate -w stop >/dev/null 2>&1
  done
  # The sync pgbak started in the background, if it is still shipping.
  pkill -f "^$work/bin/pgbak " 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

# pgbak as the server's user, with the environment PostgreSQL gives archive_command.
env_vars=(PGBAK="$pgbak_dir" PGHOST="$socket" PGPORT="$port" PGUSER=postgres OFFSITE_DIR="$offsite")
pgbak() { as_pg env "${env_vars[@]}" "$work/bin/pgbak" "$@"; }
psql_at() { as_pg "$bin/psql" -h "$socket" -p "$1" -U postgres -X -Atq -d postgres -c "$2"; }

step "a throwaway cluster in $data, archiving with pgbak into $pgbak_dir"
as_pg mkdir -p "$work/bin" "$socket" "$offsite"
cp target/release/pgbak "$work/bin/pgbak" && chmod 755 "$work/bin/pgbak"
as_pg "$bin/initdb" -D "$data" -U postgres -A trust -E UTF8 --no-instructions >/dev/null
cat >>"$data/postgresql.conf" <<CONF
port = $port
unix_socket_directories = '$socket'
listen_addresses = ''
wal_level = replica
archive_mode = on
archive_command = '$work/bin/pgbak wal %p'
CONF
echo "local replication all trust" >>"$data/pg_hba.conf"
pgbak init >/dev/null
# pg_basebackup's default spread checkpoint would make the demo wait minutes on a quiet server.
printf '[pg_basebackup]\nextra_args = ["--checkpoint=fast"]\n' | as_pg tee "$pgbak_dir/config.toml" >/dev/null
as_pg cp "$repo/examples/ship-to-directory" "$pgbak_dir/scripts/backup"
as_pg chmod 700 "$pgbak_dir/scripts/backup"
echo "archive_command = '$work/bin/pgbak wal %p'"
echo "scripts/backup  = examples/ship-to-directory (OFFSITE_DIR=$offsite)"
as_pg env "${env_vars[@]}" "$bin/pg_ctl" -D "$data" -l "$work/server.log" -w start >/dev/null

step "load: pgbench -i -s 10, then 15 s of pgbench"
as_pg "$bin/pgbench" -h "$socket" -p "$port" -U postgres -i -s 10 -q postgres 2>&1 | tail -n 1
# The seed: "To make your first backup, simply restart postgres and call pg_switch_wal()". The
# first archived segment makes pgbak start its sync, which takes the first base backup.
psql_at "$port" "select pg_switch_wal()" >/dev/null
as_pg "$bin/pgbench" -h "$socket" -p "$port" -U postgres -c 2 -j 2 -T 15 postgres 2>&1 |
  grep -E '^(number of transactions actually processed|tps)' || true
psql_at "$port" "create table written_after_load as select g as n, md5(g::text) as h from generate_series(1, 1000) g"
psql_at "$port" "select pg_switch_wal()" >/dev/null

step "pgbak status while it works"
pgbak status

step "pgbak wait 300: until everything archived is in the base backup's directory and shipped"
pgbak wait 300
pgbak status

query="select (select count(*) || ' accounts, balance sum ' || sum(abalance) || ', checksum ' || sum(hashtext(aid::text || abalance::text)) from pgbench_accounts)
  || '; ' || (select count(*) || ' history rows' from pgbench_history)
  || '; ' || (select count(*) || ' rows written after the load' from written_after_load)"
source_result=$(psql_at "$port" "$query")

step "restoring the OFFSITE copy into $restored (tar -xf base.tzst; zstd -d into pg_wal; postgres --single)"
current=$(basename "$(readlink "$pgbak_dir/current")")
backup=$offsite/pg-$current
ls -l "$backup" "$backup/pg_wal"
as_pg mkdir -m 700 "$restored"
as_pg tar -C "$restored" -xf "$backup/base.tzst"
as_pg zstd -q -d --output-dir-flat "$restored/pg_wal" "$backup"/pg_wal/*.zst
# Replays all the WAL (crash recovery from the backup's checkpoint) and exits.
as_pg "$bin/postgres" --single -F -D "$restored" postgres </dev/null 2>&1 >/dev/null |
  grep -E 'recovery|redo' || true
as_pg "$bin/pg_ctl" -D "$restored" -l "$work/restored.log" -w \
  -o "-p $restored_port -c archive_mode=off -c unix_socket_directories=$socket" start >/dev/null
restored_result=$(psql_at "$restored_port" "$query")

step "comparing"
echo "source:   $source_result"
echo "restored: $restored_result"
if [ "$source_result" = "$restored_result" ]; then
  printf '\033[1;32mMATCH: the offsite copy alone restores exactly the source data\033[0m\n'
else
  printf '\033[1;31mMISMATCH\033[0m\n'
  exit 1
fi
as_pg "$bin/pg_ctl" -D "$restored" -m fast -w stop >/dev/null

step "a mistake: DROP TABLE written_after_load (the time just before it is kept)"
before_drop=$(psql_at "$port" "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
sleep 1
psql_at "$port" "drop table written_after_load"
psql_at "$port" "select pg_switch_wal()" >/dev/null
pgbak wait 300
echo "just before the drop: $before_drop"

step "undoing it from the OFFSITE copy: pgbak restore --target-time (point-in-time recovery)"
# The one command (as the PostgreSQL OS user; PGBAK need not be set for a copy):
#   pgbak restore DEST --from COPY --target-time TIME --target-action promote
as_pg "$work/bin/pgbak" restore "$pitr" --from "$backup" --target-time "$before_drop" --target-action promote
as_pg "$bin/pg_ctl" -D "$pitr" -l "$work/pitr.log" -w -t 120 \
  -o "-p $pitr_port -c archive_mode=off -c unix_socket_directories=$socket" start >/dev/null
for _ in $(seq 120); do # the server promotes once it reaches the target
  [ "$(psql_at "$pitr_port" "select pg_is_in_recovery()")" = f ] && break
  sleep 0.5
done
pitr_result=$(psql_at "$pitr_port" "$query")
echo "source before the drop: $source_result"
echo "point in time restored: $pitr_result"
if [ "$source_result" = "$pitr_result" ]; then
  printf '\033[1;32mMATCH: the dropped table is back, restored from the offsite copy to the second before the DROP\033[0m\n'
else
  printf '\033[1;31mMISMATCH after the point-in-time restore\033[0m\n'
  exit 1
fi

step "pgbak verify --all: every byte of every backup directory, without extracting anything"
pgbak verify --all

step "pgbak prune --keep 1 --dry-run: what retention would delete (nothing is deleted)"
pgbak status --json | python3 -c 'import json, sys; s = json.load(sys.stdin); print("directories:", ", ".join(d["name"] + " (" + d["state"] + ")" for d in s["directories"]))' || true
pgbak prune --keep 1 --dry-run
