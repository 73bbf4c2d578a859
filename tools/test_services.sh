#!/usr/bin/env bash
# Start the servers the tests use (Redis, PostgreSQL) on loopback, from Debian's packages, if not already up.
# Tests read PATTERD_TEST_REDIS_URL and PATTERD_TEST_POSTGRES_URL (defaults below, see tests/services.py).
set -euo pipefail

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  redis-server --bind 127.0.0.1 --port 6379 --save '' --appendonly no --daemonize yes >/dev/null
  for _ in $(seq 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

version="$(ls /usr/lib/postgresql | sort -n | tail -1)"
if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  pg_lsclusters -h | grep -q "^$version main" || pg_createcluster "$version" main >/dev/null
  pg_ctlcluster "$version" main start
  for _ in $(seq 100); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 0.1; done
fi
as_postgres() { runuser -u postgres -- "$@"; }
# A superuser role, so each test can create and drop a database of its own.
if ! as_postgres psql -tAc "SELECT 1 FROM pg_roles WHERE rolname='patterd'" | grep -q 1; then
  as_postgres psql -q -c "CREATE ROLE patterd LOGIN SUPERUSER PASSWORD 'patterd'"
fi
if ! as_postgres psql -tAc "SELECT 1 FROM pg_database WHERE datname='patterd_test'" | grep -q 1; then
  as_postgres createdb -O patterd patterd_test
fi
echo "services: redis on 127.0.0.1:6379, postgresql $version on 127.0.0.1:5432"
