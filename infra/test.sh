#!/usr/bin/env bash
# The whole check, as CI runs it: set-up, lint and format (ruff), types (mypy strict), then the tests
# (pytest; extra arguments are passed on, e.g. `infra/test.sh -m "not slow" -x`).
# Tests start their own RabbitMQ and PostgreSQL on free ports unless KPR_AMQP_URL /
# KPR_TEST_POSTGRES_URL name existing ones.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '==> %s\n' "$*" >&2; }

./infra/setup.sh

say "ruff check, ruff format --check"
.venv/bin/ruff check .
.venv/bin/ruff format --check .

say "mypy (strict)"
.venv/bin/mypy

say "pytest $*"
log="$(mktemp -t kpr-pytest.XXXXXX)"
trap 'rm -f "$log"' EXIT
set +e
.venv/bin/pytest "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

summary="$(grep -E '^=+ .*(passed|failed|error|skipped|no tests ran).* =+$' "$log" | tail -n 1 || true)"
[ -z "$summary" ] && summary="$(tail -n 1 "$log")"
say "pytest summary: ${summary}"
if [ "$status" -eq 5 ]; then
    echo "infra/test.sh: pytest collected no tests (exit 5): that is a failure, not a pass" >&2
    exit 1
fi
exit "$status"
