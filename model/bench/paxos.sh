#!/usr/bin/env bash
# Checker speed side by side: the sa-Scribe model against Stateright's own Single Decree Paxos
# example (the one in the stateright 0.31.0 crate this workspace depends on), on this machine,
# in the same run, same strategy (BFS) and thread count. Prints unique states, seconds and
# unique states/s of each.
#
#   model/bench/paxos.sh [PAXOS_CLIENTS (default 3)] [-- sascribe-model check options]
#
# The paxos example is built from the crate's registry copy into a scratch directory (it is
# not part of this repository). Default sa-Scribe configuration: CI's handover check, with pACKs
# elided as `check` does by default (--deliver-packs among the options after -- keeps them).
# SASCRIBE_MODEL names an already built checker binary (CI passes its workspace build's, which
# `cargo build -p sascribe-model` would build again with the model package's features alone).
# RUNS (default 3) rounds run the three in turn, each round all three one after the other; a
# run's time varies by 10 % or more on a shared machine, so the medians are printed last.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
clients=3
if [ $# -gt 0 ] && [ "$1" != "--" ]; then clients=$1; shift; fi
[ "${1:-}" = "--" ] && shift
if [ $# -eq 0 ]; then
    set -- --config small --peers 3 --subscribers 2 --publishes 1 --crashes 1 --expiries 0 --handovers 1
fi
threads=$(nproc)

model=${SASCRIBE_MODEL:-}
if [ -z "$model" ]; then
    cargo build --release -q --manifest-path "$root/Cargo.toml" -p sascribe-model
    model=$root/target/release/sascribe-model
fi
src=$(cargo metadata --format-version 1 --manifest-path "$root/Cargo.toml" |
    python3 -c 'import json,sys; m=json.load(sys.stdin); print(next(p["manifest_path"] for p in m["packages"] if p["name"]=="stateright"))')
src=$(dirname "$src")
work=${TMPDIR:-/tmp}/sascribe-paxos-bench
mkdir -p "$work/src"
# The example's reporter polls the checker once a second, so its process ends at the next whole
# second after the search does (its wall time read 5.02, 6.02, 8.02 s): it polls every 100 ms
# here, as `sascribe-model check` does, and nothing else of the example changes.
python3 - "$src/examples/paxos.rs" "$work/src/main.rs" <<'PY'
import sys
src = open(sys.argv[1]).read()
old = ".report(&mut WriteReporter::new(&mut std::io::stdout()));"
assert old in src, "the paxos example no longer reports through WriteReporter"
src = src.replace(old, ".report(&mut BenchReporter(WriteReporter::new(&mut std::io::stdout())));")
src += """
/// Added by sa-Scribe's model/bench/paxos.sh: the example's reporter, polling every 100 ms.
struct BenchReporter<R>(R);

impl<M: Model, R: stateright::report::Reporter<M>> stateright::report::Reporter<M>
    for BenchReporter<R>
{
    fn report_checking(&mut self, data: stateright::report::ReportData) {
        self.0.report_checking(data)
    }

    fn report_discoveries(
        &mut self,
        model: &M,
        discoveries: std::collections::BTreeMap<&'static str, stateright::report::ReportDiscovery<M>>,
    ) where
        M::Action: std::fmt::Debug + PartialEq,
        M::State: std::fmt::Debug + std::hash::Hash + PartialEq,
    {
        self.0.report_discoveries(model, discoveries)
    }

    fn delay(&self) -> Duration {
        Duration::from_millis(100)
    }
}
"""
open(sys.argv[2], "w").write(src)
PY
cat >"$work/Cargo.toml" <<'TOML'
[package]
name = "paxos-bench"
version = "0.1.0"
edition = "2021"

[dependencies]
stateright = "=0.31.0"
serde = { version = "1", features = ["derive"] }
serde_json = "1"
env_logger = "0.11"
num_cpus = "1"
pico-args = "0.5"

[workspace]
TOML
cargo build --release -q --manifest-path "$work/Cargo.toml"
# The same example with the allocator the sa-Scribe checker uses (mimalloc), for a like-for-like
# comparison.
mkdir -p "$work-mi/src"
cp "$work/Cargo.toml" "$work-mi/Cargo.toml"
sed -i 's/^pico-args = "0.5"$/pico-args = "0.5"\nmimalloc = { version = "0.1", default-features = false }/' "$work-mi/Cargo.toml"
{ cat "$work/src/main.rs"; printf '\n#[global_allocator]\nstatic GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;\n'; } >"$work-mi/src/main.rs"
cargo build --release -q --manifest-path "$work-mi/Cargo.toml"

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
# "Done. states=N, unique=U, depth=D, sec=S" (whole seconds): time it ourselves.
paxos_run() {
    local start end done
    start=$(date +%s.%N)
    done=$("$1/target/release/paxos-bench" check "$clients" 2>&1 | grep -m1 '^Done')
    end=$(date +%s.%N)
    pu=$(sed -E 's/.*unique=([0-9]+).*/\1/' <<<"$done")
    ps=$(python3 -c "print(f'{$end-$start:.2f}')")
}
row() { printf '%-60s %10s %9s %10.0f\n' "$1" "$2" "$3" "$(python3 -c "print($2/$3)")"; }
median() { tr ' ' '\n' <<<"$1" | sort -g | awk 'NF {v[++n] = $1} END {print (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2}'; }
runs=${RUNS:-3}
printf '%-60s %10s %9s %10s\n' "BFS, $threads threads" "unique" "seconds" "unique/s"
glibc="" mi="" ours="" su=""
for round in $(seq "$runs"); do
    paxos_run "$work"
    row "round $round: stateright paxos example, $clients clients (glibc malloc)" "$pu" "$ps"
    glibc="$glibc $ps"
    paxos_run "$work-mi"
    row "round $round: stateright paxos example, $clients clients (mimalloc)" "$pu" "$ps"
    mi="$mi $ps"
    out=$("$model" check --strategy bfs --progress 0 --threads "$threads" "$@")
    su=$(awk '/^unique states:/{print $3}' <<<"$out")
    secs=$(awk '/^time:/{print $2}' <<<"$out")
    row "round $round: sa-Scribe model (mimalloc)" "$su" "$secs"
    ours="$ours $secs"
done
echo "median of $runs:"
row "stateright paxos example, $clients clients (glibc malloc)" "$pu" "$(median "$glibc")"
row "stateright paxos example, $clients clients (mimalloc)" "$pu" "$(median "$mi")"
row "sa-Scribe model (mimalloc)" "$su" "$(median "$ours")"
echo "sa-Scribe configuration: $*"
grep '^result:' <<<"$out"
