#!/usr/bin/env bash
# Set up (idempotent), then run the demo: `infra/setup-and-demo.sh [kpr demo options]`.
# The demo uses KPR_AMQP_URL if set, else starts a local RabbitMQ under .kpr/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

./infra/setup.sh
exec .venv/bin/kpr demo "$@"
