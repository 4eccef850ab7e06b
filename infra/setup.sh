#!/usr/bin/env bash
# Idempotent set-up for kpr-stream on Debian bookworm (as root on a fresh machine):
#   1. the system packages the local broker and database need (rabbitmq-server,
#      postgresql, openssl; python3 with its venv module and headers, gcc) and the tests' tools (prometheus
#      for promtool, chromium for the report test), installed only when missing;
#   2. the project's virtualenv in .venv with `pip install -e ".[dev]"`, redone only
#      when pyproject.toml changed.
# The tests and the demo start their own RabbitMQ / PostgreSQL processes on free ports
# (kpr/localbroker.py, kpr/localpostgres.py); the system-wide services that the Debian
# packages would start are kept from starting and are never used.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'infra/setup.sh: error: %s\n' "$*" >&2; exit 1; }

# Run a noisy command with its output in a log; show the log's tail only if it fails.
run_logged() {
    local log
    log="$(mktemp -t kpr-setup.XXXXXX)"
    if ! "$@" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        rm -f "$log"
        die "failed: $*"
    fi
    rm -f "$log"
}

# -- 1. system packages ----------------------------------------------------------------
missing=()
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || missing+=(rabbitmq-server)
compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null || missing+=(postgresql)
command -v openssl >/dev/null || missing+=(openssl)
# promtool checks the Prometheus alert rules; chromium renders the HTML report in its test.
command -v promtool >/dev/null || missing+=(prometheus)
command -v chromium >/dev/null || missing+=(chromium)
command -v python3 >/dev/null || missing+=(python3)
# python-qpid-proton (the AMQP 1.0 codec, contracts/wire.py) is built from its sdist.
command -v gcc >/dev/null || missing+=(gcc libc6-dev)
python3 -c 'import os, sysconfig; raise SystemExit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null \
    || missing+=(python3-dev)
if [ ! -x .venv/bin/python ] && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    missing+=(python3-venv)
fi

if ((${#missing[@]})); then
    [ "$(id -u)" = 0 ] || die "must run as root to install: ${missing[*]}"
    say "installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Exit status 101 from policy-rc.d tells invoke-rc.d not to start services: the
    # packages would otherwise start rabbit@$HOSTNAME on 5672 and a cluster on 5432.
    own_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    remove_policy() { [ -z "$own_policy" ] || rm -f /usr/sbin/policy-rc.d; }
    trap remove_policy EXIT
    run_logged apt-get update -q
    run_logged apt-get install -y -q --no-install-recommends "${missing[@]}"
    remove_policy
    trap - EXIT
    # Should a service have started anyway (a policy not honoured), stop it: our nodes
    # do not need it and it would hold the default ports.
    if pgrep -u rabbitmq -f beam >/dev/null 2>&1; then
        say "stopping the system-wide RabbitMQ node the package started"
        /etc/init.d/rabbitmq-server stop >/dev/null 2>&1 || true
    fi
    if command -v pg_lsclusters >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q ' online '; then
        say "stopping the system-wide PostgreSQL cluster the package started"
        pg_lsclusters -h | awk '$4 == "online" {print $1, $2}' | while read -r version cluster; do
            pg_ctlcluster "$version" "$cluster" stop || true
        done
    fi
fi

python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "python3 >= 3.11 is needed, found $(python3 -V 2>&1)"

# -- 2. virtualenv -------------------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    run_logged python3 -m venv .venv
fi

stamp=.venv/.kpr-setup-stamp
wanted="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$wanted" ] || ! .venv/bin/python -c 'import kpr' 2>/dev/null; then
    say "installing kpr-stream and its development tools into .venv"
    run_logged .venv/bin/python -m pip install -q --disable-pip-version-check --no-input -e ".[dev]"
    printf '%s\n' "$wanted" >"$stamp"
fi
say "set-up complete"
