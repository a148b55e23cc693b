#!/usr/bin/env bash
# Prints the URL of a PostgreSQL database the test suite can use, starting a server first when none answers.
#
#   KENSA_TEST_DATABASE_URL="$(scripts/ensure_postgres.sh)" pytest ...
#
# 1. KENSA_TEST_DATABASE_URL already set: printed as is (your own server).
# 2. A server on 127.0.0.1:5432 with database `test` that lets this user in (CI's machines): that one.
# 3. Otherwise Debian's `postgresql` package (installed when missing), its default cluster started with
#    pg_ctlcluster, a superuser role named after this OS user and a database `test`, reached over the Unix
#    socket (peer authentication, so no password is made or stored).
# The role must be allowed to create databases: pytest-django creates `test_<name>` beside `test` and drops it.
# Everything but the URL goes to stderr.
set -euo pipefail

say() { echo "ensure_postgres: $*" >&2; }

if [[ -n ${KENSA_TEST_DATABASE_URL:-} ]]; then
    echo "$KENSA_TEST_DATABASE_URL"
    exit 0
fi

user=$(id -un)
tcp_url="postgres://${user}@127.0.0.1:5432/test"
socket_dir=/var/run/postgresql
socket_url="postgres://${user}@${socket_dir//\//%2F}/test"

answers() { command -v psql >/dev/null && psql "$1" -XAtqc 'select 1' >/dev/null 2>&1; }

if answers "$tcp_url"; then
    echo "$tcp_url"
    exit 0
fi

if ! command -v pg_ctlcluster >/dev/null; then
    say "installing Debian's postgresql package"
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq postgresql >&2
fi

as_postgres() {
    if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi
}

# The newest installed major version's default cluster, created by the package as `main`.
version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! as_postgres pg_isready -q -h "$socket_dir"; then
    say "starting PostgreSQL $version (cluster main)"
    if [[ $(id -u) -eq 0 ]]; then pg_ctlcluster "$version" main start >&2; else sudo pg_ctlcluster "$version" main start >&2; fi
fi
for _ in $(seq 50); do
    as_postgres pg_isready -q -h "$socket_dir" && break
    sleep 0.2
done

if [[ $(as_postgres psql -XAtqc "select 1 from pg_roles where rolname = '${user}'") != 1 ]]; then
    say "creating role ${user}"
    as_postgres createuser --superuser "$user" >&2
fi
if [[ $(as_postgres psql -XAtqc "select 1 from pg_database where datname = 'test'") != 1 ]]; then
    say "creating database test"
    as_postgres createdb --owner "$user" test >&2
fi

if answers "$socket_url"; then
    echo "$socket_url"
    exit 0
fi
say "PostgreSQL is running but ${socket_url} does not answer; set KENSA_TEST_DATABASE_URL to a database you can use"
exit 1
