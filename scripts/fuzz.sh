#!/usr/bin/env bash
# Fuzzes the handler's steps before any network call, from Lambda payload bytes
# to a validated request (fuzz/fuzz_targets/event_to_request.rs), with cargo
# fuzz and libFuzzer. Exits non-zero when the fuzzer finds a crash, and prints
# the path of the crashing input.
#
# Settings, from the environment:
#   FUZZ_SECONDS    run time of the fuzzer, in seconds (default 60)
#   FUZZ_MAX_LEN    largest input the fuzzer makes, in bytes (default 65536)
#   FUZZ_TIMEOUT    time one input may take before it counts as a crash, in seconds (default 10)
#   FUZZ_SANITIZER  none (default) or address
#
# The seed corpus, fuzz/seeds/event_to_request/, is written anew at every run
# from tests/fixtures/bad_inputs.json and events/, so that the fuzzer starts
# from real API Gateway, function URL and ALB events. Commit it when it
# changes. The inputs the fuzzer adds go to fuzz/corpus/, and crashes to
# fuzz/artifacts/; git ignores both. Inputs under fuzz/regressions/ are read
# at every run too, and tests/fuzz_regressions.rs replays them.
set -euo pipefail

cd "$(dirname "$0")/.."

readonly CARGO_FUZZ_VERSION=0.13.2
readonly TOOLS_ROOT=.tools
readonly TARGET=event_to_request
readonly SEEDS=fuzz/seeds/$TARGET
readonly CORPUS=fuzz/corpus/$TARGET
readonly ARTIFACTS=fuzz/artifacts/$TARGET
readonly REGRESSIONS=fuzz/regressions

seconds=${FUZZ_SECONDS:-60}
max_len=${FUZZ_MAX_LEN:-65536}
timeout=${FUZZ_TIMEOUT:-10}
sanitizer=${FUZZ_SANITIZER:-none}

fail() {
  echo "fuzz: $*" >&2
  exit 1
}

for setting in seconds max_len timeout; do
  [[ ${!setting} =~ ^[1-9][0-9]*$ ]] || fail "FUZZ_${setting^^} must be a positive whole number, not '${!setting}'"
done

case $sanitizer in
  none) ;;
  address)
    # cargo fuzz passes -Zsanitizer=address to rustc, which the stable
    # toolchain accepts only with RUSTC_BOOTSTRAP=1. --sanitizer none needs no
    # unstable flag.
    export RUSTC_BOOTSTRAP=1
    ;;
  *) fail "FUZZ_SANITIZER must be none or address, not '$sanitizer'" ;;
esac

# cargo fuzz, at a pinned version, in the project's own tool folder.
export PATH="$PWD/$TOOLS_ROOT/bin:$PATH"
if [[ "$(cargo-fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
  cargo install --locked --root "$TOOLS_ROOT" cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

# One compact JSON file per event, named after its case or sample file. A case
# with `expand` entries is written without them, because its expanded strings
# exceed FUZZ_MAX_LEN.
rm -rf "$SEEDS"
mkdir -p "$SEEDS" "$CORPUS" "$ARTIFACTS" "$REGRESSIONS"
python3 - "$SEEDS" <<'PYTHON'
import json
import pathlib
import re
import sys

seeds = pathlib.Path(sys.argv[1])


def write_seed(name, event):
    path = seeds / f"{name}.json"
    path.write_text(json.dumps(event, separators=(",", ":"), ensure_ascii=False) + "\n")


# The case's index keeps names unique where two case names differ only in
# punctuation, such as "path ..%2Fuser-b" and "path %2Fuser-b".
cases = json.loads(pathlib.Path("tests/fixtures/bad_inputs.json").read_text())
for index, case in enumerate(cases):
    slug = re.sub(r"[^a-z0-9]+", "-", case["name"].lower()).strip("-")
    write_seed(f"bad-input-{index:03}-{slug}", case["event"])

for sample in sorted(pathlib.Path("events").glob("*.json")):
    if sample.name != "expected.json":
        write_seed(f"event-{sample.stem}", json.loads(sample.read_text()))
PYTHON

# cargo fuzz has no --locked flag, so a stale fuzz/Cargo.lock is caught here.
cargo metadata --locked --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null
cargo fuzz build --sanitizer "$sanitizer" "$TARGET"

# A file older than any artifact of this run, to tell new crashes from old.
started=$(mktemp)
trap 'rm -f "$started"' EXIT

echo "fuzz: running $TARGET for $seconds s, inputs up to $max_len bytes, sanitizer $sanitizer"
status=0
cargo fuzz run --sanitizer "$sanitizer" "$TARGET" "$CORPUS" "$SEEDS" "$REGRESSIONS" -- \
  -max_total_time="$seconds" \
  -max_len="$max_len" \
  -timeout="$timeout" \
  -dict="fuzz/$TARGET.dict" \
  -print_final_stats=1 || status=$?

if ((status != 0)); then
  echo "fuzz: $TARGET failed with exit status $status" >&2
  crashes=$(find "$ARTIFACTS" -type f -newer "$started" | sort)
  if [[ -n $crashes ]]; then
    echo "fuzz: crashing input(s):" >&2
    echo "$crashes" | sed 's/^/  /' >&2
    echo "fuzz: with $TOOLS_ROOT/bin on PATH, reproduce with 'cargo fuzz run -s $sanitizer $TARGET FILE'," \
      "shrink with 'cargo fuzz tmin -s $sanitizer $TARGET FILE', and keep the result under $REGRESSIONS/" >&2
  fi
  exit "$status"
fi

echo "fuzz: no crash in $seconds s; the corpus has $(find "$CORPUS" -type f | wc -l) inputs in $CORPUS"
