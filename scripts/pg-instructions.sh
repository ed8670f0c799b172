#!/usr/bin/env bash
# Counts the instructions PostgreSQL executes for a small `docpipe bench`
# run, with every server process under valgrind's callgrind. Unlike CPU
# time on a shared VM (which drifts by a quarter within the hour), the
# count repeats to ~6% (five runs: 5.72–6.13 G for 2,000 chains), so it
# tells changes to the schema or the statements larger than that. It
# includes batch creation and the low-rate run; compare only counts made
# the same way.
#
#   scripts/pg-instructions.sh [SQL]   SQL runs after the migrations, e.g.
#                                      "ALTER DATABASE x SET plan_cache_mode = force_generic_plan"
#   CHAINS=2000 (default)              chains in the throughput run
#
# Needs valgrind and a built bin/docpipe; as root the server runs as the
# postgres user. Takes about a minute per 2,000 chains.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

chains=${CHAINS:-2000}
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
docpipe=$PWD/bin/docpipe
work=$(mktemp -d)
as_pg() { if [[ $(id -u) == 0 ]]; then su postgres -c "$1"; else bash -c "$1"; fi; }
[[ $(id -u) == 0 ]] && chown postgres "$work"
trap 'as_pg "$bin/pg_ctl -D $work/data -m immediate stop" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

opts="-c listen_addresses= -c unix_socket_directories=$work -c max_connections=100"
url="host=$work dbname=x user=postgres"
as_pg "$bin/initdb -D $work/data -U postgres --auth=trust -E UTF8 --locale=C -N" >/dev/null
as_pg "$bin/pg_ctl -D $work/data -o '$opts' -l $work/log -w start" >/dev/null
psql -h "$work" -U postgres -qc "CREATE DATABASE x"
"$docpipe" migrate -database-url "$url" up >/dev/null
if [[ -n ${1:-} ]]; then psql -h "$work" -U postgres -d x -qc "$1"; fi
as_pg "$bin/pg_ctl -D $work/data -w stop" >/dev/null

mkdir "$work/cg" && [[ $(id -u) == 0 ]] && chown postgres "$work/cg"
as_pg "valgrind --tool=callgrind --trace-children=yes --callgrind-out-file=$work/cg/%p $bin/postgres -D $work/data $opts >$work/valgrind.log 2>&1 &"
for _ in $(seq 120); do pg_isready -h "$work" -q && break; sleep 1; done
"$docpipe" bench -database-url "$url" -log-level warn -chains "$chains" -batch 500 -runs 1 -low-duration 1s -low-rate 10 >/dev/null
as_pg "$bin/pg_ctl -D $work/data -w -t 300 stop" >/dev/null
sleep 2

total=0
for f in "$work"/cg/*; do
	n=$(awk '/^(summary|totals):/ { print $2; exit }' "$f")
	total=$((total + ${n:-0}))
done
echo "PostgreSQL instructions: $total ($((total / chains)) per chain, $chains chains)"
