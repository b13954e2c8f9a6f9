#!/usr/bin/env bash
# The fault campaign against real `sascribe peer` processes, each in its own network namespace
# (docs/RELIABILITY.md). Run as root from anywhere in a clone:
#
#   tests/netns/run.sh [CAMPAIGN OPTIONS]      e.g. --schedules 20 --seed 3
#                                                   --only root-kill,loss5,root-pause,root-successor-partition --schedules 4
#
# Needs iproute2 (`ip`) and nftables (`nft`; installed with apt-get if missing). Builds the peer
# and the campaign (`cargo build --release`), then runs `sascribe-netns campaign` with the
# options given (`--help` lists them). Each schedule gets a fresh cluster in namespaces named
# sxc<pid>-…; the campaign removes them when a schedule ends, on Ctrl-C and on SIGTERM, and this
# script's trap removes what a killed campaign left. Histories, fault logs, peer logs and a
# report per schedule: target/netns-campaign/NNN/. Exit 0 only if every schedule passed.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "$(id -u)" != 0 ]; then
    echo "$0: run as root (it creates network namespaces and nftables rules)" >&2
    exit 2
fi
command -v ip >/dev/null || { echo "$0: ip not found (apt-get install iproute2)" >&2; exit 2; }
if ! command -v nft >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables >/dev/null
fi
cargo build --release -q -p sascribe --bin sascribe -p sascribe-netns
trap 'target/release/sascribe-netns cleanup >/dev/null 2>&1 || true' EXIT
target/release/sascribe-netns campaign "$@"
