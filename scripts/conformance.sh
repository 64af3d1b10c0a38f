#!/usr/bin/env bash
# Runs schemathesis with the contract api/delete-learning-user.openapi.yaml against the real
# function under `cargo lambda watch`, on a seeded dynalite, through the function URL. It fails
# on a status that neither the contract nor README.md documents, an error body that does not
# match the contract's error schemas, a 5xx, or an operation that does not enforce its Bearer
# token. It prints the counts of operations, test cases and checks at the end.
#
# Run it with `make conformance`, which installs node_modules (dynalite), .venv (cargo-lambda)
# and .conformance-venv (schemathesis) first. Every server listens on 127.0.0.1 only, and
# schemathesis sends requests only to the function URL on 127.0.0.1. Working files go to a new
# directory under .conformance/, which is removed after a successful run and kept after a
# failure.
#
# Settings: CONFORMANCE_MAX_EXAMPLES (generated test cases per operation in the fuzzing phase,
# default 1000) and CONFORMANCE_SEED (schemathesis's random seed, default 20261205). The same
# seed and the same binary send the same requests.
set -euo pipefail

cd "$(dirname "$0")/.."

readonly TABLE=agno_learnings
readonly CONTRACT=api/delete-learning-user.openapi.yaml
readonly MAX_EXAMPLES=${CONFORMANCE_MAX_EXAMPLES:-1000}
readonly SEED=${CONFORMANCE_SEED:-20261205}
readonly DYNALITE_TIMEOUT=15 # seconds for dynalite to print its port
readonly READY_TIMEOUT=300   # seconds for the function to respond to its first request
readonly REQUEST_TIMEOUT=30  # seconds for one request of schemathesis
readonly STOP_TIMEOUT=10     # seconds for a server to exit before it gets SIGKILL

fail() {
  echo "conformance: $*" >&2
  exit 1
}

[[ $MAX_EXAMPLES =~ ^[1-9][0-9]*$ ]] || fail "invalid CONFORMANCE_MAX_EXAMPLES '$MAX_EXAMPLES'; expected a positive integer"
[[ $SEED =~ ^[0-9]+$ ]] || fail "invalid CONFORMANCE_SEED '$SEED'; expected a non-negative integer"

# The process helpers are the same as in scripts/demo.sh.

# Prints the ids of all descendants of process $1, each child before its own children.
descendants() {
  local child
  for child in $(pgrep -P "$1" || true); do
    echo "$child"
    descendants "$child"
  done
}

# Waits up to $2 seconds for process $1 to exit, and returns 1 if it is still running.
wait_for_exit() {
  local pid=$1 tenths=$(($2 * 10))
  while ((tenths > 0)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null || true
      return 0
    fi
    sleep 0.1
    tenths=$((tenths - 1))
  done
  return 1
}

# Stops process $1 (named $2) with SIGTERM, and with SIGKILL if it is still running after
# STOP_TIMEOUT.
stop_process() {
  local pid=$1 name=$2
  kill -TERM "$pid" 2>/dev/null || return 0
  if ! wait_for_exit "$pid" "$STOP_TIMEOUT"; then
    echo "conformance: $name (pid $pid) still running ${STOP_TIMEOUT} s after SIGTERM; sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
}

# --- Tools -------------------------------------------------------------------------------

# Only the tools that the Makefile installs are used, so that another version on PATH cannot
# change the result.
[[ -x .venv/bin/cargo-lambda ]] || fail ".venv/bin/cargo-lambda not found; run \`make conformance\`, which installs it"
[[ -x .conformance-venv/bin/schemathesis ]] || fail ".conformance-venv/bin/schemathesis not found; run \`make conformance\`, which installs it"
[[ -f node_modules/dynalite/package.json ]] || fail "node_modules/dynalite not found; run \`make conformance\`, which runs npm ci"
[[ -f $CONTRACT ]] || fail "$CONTRACT not found"
export PATH="$PWD/.venv/bin:$PATH"
for tool in node cargo curl python3 ss pgrep setpriv; do
  command -v "$tool" >/dev/null || fail "$tool not found on PATH; the conformance run needs it"
done

# The script sets the whole AWS and function configuration itself, as scripts/demo.sh does,
# so that no developer setting sends a request to a real account or changes a status.
while read -r name; do
  unset "$name"
done < <(compgen -e | grep -E '^(AWS_|AUTH_|JWT_|LEARNINGS_|SCHEMATHESIS_)' || true)

mkdir -p .conformance
work_dir=$(mktemp -d "$PWD/.conformance/run.XXXXXX")

# --- Cleanup -----------------------------------------------------------------------------

dynalite_pid=""
dynalite_stdin="" # file descriptor of the write end of dynalite's stdin
watch_pid=""
succeeded=false

cleanup() {
  set +e
  if [[ -n $watch_pid ]]; then
    # The function instance runs in a session of its own, so it is collected before
    # cargo lambda watch stops and then checked separately.
    local function_pids
    function_pids=$(descendants "$watch_pid")
    stop_process "$watch_pid" "cargo lambda watch"
    for pid in $function_pids; do
      stop_process "$pid" "function process"
    done
  fi

  # dynalite exits when its stdin closes.
  if [[ -n $dynalite_stdin ]]; then
    exec {dynalite_stdin}>&-
  fi
  if [[ -n $dynalite_pid ]] && ! wait_for_exit "$dynalite_pid" "$STOP_TIMEOUT"; then
    stop_process "$dynalite_pid" "dynalite"
  fi

  if $succeeded; then
    rm -rf "$work_dir"
  else
    echo "conformance: logs and reports kept in ${work_dir#"$PWD"/}" >&2
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- Build -------------------------------------------------------------------------------

# The two builds are separate because the examples enable the dev-dependencies' features,
# and the function must be built without them, as scripts/demo.sh explains.
echo "==> Building the table example, the token example and the function (debug)"
cargo build --locked --example learnings_table --example sign_token
cargo build --locked --bin bootstrap

# --- dynalite ----------------------------------------------------------------------------

echo "==> Starting dynalite"
mkfifo "$work_dir/dynalite.stdin"
node tests/support/dynalite.js <"$work_dir/dynalite.stdin" >"$work_dir/dynalite.out" 2>"$work_dir/dynalite.log" &
dynalite_pid=$!
# This shell keeps the write end of the FIFO open, so dynalite stops by itself on any exit
# of the script, SIGKILL included.
exec {dynalite_stdin}>"$work_dir/dynalite.stdin"

deadline=$((SECONDS + DYNALITE_TIMEOUT))
dynalite_port=""
while [[ -z $dynalite_port ]]; do
  if ! kill -0 "$dynalite_pid" 2>/dev/null; then
    cat "$work_dir/dynalite.log" >&2
    fail "dynalite exited before it printed its port"
  fi
  if ((SECONDS >= deadline)); then
    fail "dynalite did not print its port within ${DYNALITE_TIMEOUT} s; see ${work_dir#"$PWD"/}/dynalite.log"
  fi
  sleep 0.2
  dynalite_port=$(sed -n 's/^listening on \([0-9][0-9]*\)$/\1/p' "$work_dir/dynalite.out")
done
echo "dynalite listens on 127.0.0.1:$dynalite_port"

# The same settings as scripts/demo.sh: dummy credentials, no instance metadata and no
# profile files, so the SDK looks for credentials nowhere else.
export LEARNINGS_TABLE=$TABLE
export AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:$dynalite_port
export AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=conformance
export AWS_SECRET_ACCESS_KEY=conformance
export AWS_EC2_METADATA_DISABLED=true
export AWS_CONFIG_FILE=$work_dir/no-aws-config
export AWS_SHARED_CREDENTIALS_FILE=$work_dir/no-aws-credentials
# Tokens signed by the TEST-ONLY RSA key of tests/fixtures/keys.
JWT_VERIFICATION_KEY=$(cat tests/fixtures/keys/rsa-public.pem)
export JWT_VERIFICATION_KEY

echo "==> Creating and seeding $TABLE"
cargo run --quiet --locked --example learnings_table -- seed

# --- cargo lambda watch ------------------------------------------------------------------

# A free port picked by the kernel. Another process could take it before cargo lambda watch
# binds it, and the readiness check below then fails with the watch log.
watch_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base_url=http://127.0.0.1:$watch_port/lambda-url/bootstrap

echo "==> Starting cargo lambda watch on 127.0.0.1:$watch_port"
# --ignore-changes keeps the binary built above for the whole run, although others may edit
# src/ meanwhile. setpriv sends cargo lambda watch SIGTERM if the script dies without its
# trap. The FIFO's write end is closed in this child, so that only the script keeps
# dynalite alive.
setpriv --pdeathsig TERM cargo lambda watch --ignore-changes \
  --invoke-address 127.0.0.1 --invoke-port "$watch_port" \
  >"$work_dir/watch.log" 2>&1 {dynalite_stdin}>&- &
watch_pid=$!

# cargo lambda watch starts the function on the first request. A request without a token is
# that first request, because the function rejects it with 401 before any DynamoDB call.
ready_start=$SECONDS
deadline=$((SECONDS + READY_TIMEOUT))
until ready_status=$(curl --silent --max-time 10 --output /dev/null --write-out '%{http_code}' \
  -X DELETE "$base_url/learnings/users/readiness-probe") && [[ $ready_status != 000 ]]; do
  if ! kill -0 "$watch_pid" 2>/dev/null; then
    tail -n 20 "$work_dir/watch.log" >&2
    fail "cargo lambda watch exited; the lines above are the end of its log"
  fi
  # cargo lambda watch 1.9.2 logs "command exited" when the function process ends, and does
  # not start it again.
  if grep -q 'command exited' "$work_dir/watch.log"; then
    tail -n 20 "$work_dir/watch.log" >&2
    fail "the function exited at start-up; the lines above are the end of the watch log"
  fi
  if ((SECONDS >= deadline)); then
    tail -n 20 "$work_dir/watch.log" >&2
    fail "the function did not respond within ${READY_TIMEOUT} s; the lines above are the end of the watch log"
  fi
  sleep 1
done
if [[ $ready_status != 401 ]]; then
  tail -n 20 "$work_dir/watch.log" >&2
  fail "the function returned status $ready_status for a request without a token, expected 401"
fi
echo "the function responded after $((SECONDS - ready_start)) s"

# Checks that every listening TCP socket of the servers is on 127.0.0.1.
listening=""
for pid in $dynalite_pid $watch_pid $(descendants "$watch_pid"); do
  command_name=$(ps -o comm= -p "$pid" || echo exited)
  for address in $(ss -H -ltnp | awk -v pid="pid=$pid," 'index($0, pid) { print $4 }'); do
    [[ $address == 127.0.0.1:* ]] || fail "$command_name (pid $pid) listens on $address, not on 127.0.0.1"
    listening="$listening $address ($command_name)"
  done
done
[[ $listening == *" 127.0.0.1:$watch_port "* ]] || fail "cargo lambda watch does not listen on 127.0.0.1:$watch_port"
echo "listening sockets:$listening; none on 0.0.0.0 or [::]"

# --- schemathesis ------------------------------------------------------------------------

# Each pass runs with one caller's token, because one token cannot reach every status. The
# admin may delete any user's learnings, so its requests end in 204, 400, 404, 405 or 422.
# A scoped user's requests for other users end in 403.
admin_token=$(cargo run --quiet --locked --example sign_token -- conformance-admin --scope agent_os:admin)
user_token=$(cargo run --quiet --locked --example sign_token -- user-a)

# status_documented and service_error_body_conformance come from scripts/conformance_checks.py.
# The first replaces status_code_conformance, which accepts only the contract's statuses.
# response_schema_conformance and content_type_conformance cover the contract's statuses,
# unsupported_method sends other methods and expects 405, and ignored_auth repeats a 2xx
# request without the token and with an invalid one and expects 401 or 403.
readonly CHECKS=not_a_server_error,status_documented,response_schema_conformance,service_error_body_conformance,content_type_conformance,unsupported_method,ignored_auth
export SCHEMATHESIS_HOOKS=$PWD/scripts/conformance_checks.py

# An explicit configuration file stops schemathesis from reading a schemathesis.toml of this
# directory or a parent. With its cache off, schemathesis neither writes .schemathesis/ here
# nor replays the requests of earlier runs, which would make two runs of one seed differ.
printf '[cache]\nenabled = false\n' >"$work_dir/schemathesis.toml"

# Runs one schemathesis pass named $1 with the Bearer token $2, and writes its log and
# reports under $work_dir/$1.
run_pass() {
  local name=$1 token=$2
  echo "==> schemathesis, $name token, $MAX_EXAMPLES examples, seed $SEED"
  # --url replaces the contract's empty server list, and the contract stays as it is. One
  # worker and no example database keep the run repeatable for a seed. The reports never
  # contain the token, because schemathesis masks the Authorization header.
  .conformance-venv/bin/schemathesis --config-file "$work_dir/schemathesis.toml" --no-color run "$CONTRACT" \
    --url "$base_url" \
    --header "Authorization: Bearer $token" \
    --checks "$CHECKS" \
    --max-examples "$MAX_EXAMPLES" \
    --seed "$SEED" \
    --workers 1 \
    --generation-database none \
    --request-timeout "$REQUEST_TIMEOUT" \
    --report ndjson \
    --report-dir "$work_dir/$name" \
    2>&1 | tee "$work_dir/$name.log"
}

failed_passes=""
for pass in admin user; do
  token_variable=${pass}_token
  if ! run_pass "$pass" "${!token_variable}"; then
    failed_passes="$failed_passes $pass"
  fi
done

# --- Summary -----------------------------------------------------------------------------

echo "==> Summary"
echo "finished in ${SECONDS} s"
# Counts from each pass's NDJSON report: the operations tested, the test cases, the recorded
# responses per method and status, and each check's results. The requests of ignored_auth
# without a valid token are not recorded there. A check that returned without a verdict,
# such as ignored_auth on a 4xx, counts as a success, as in schemathesis's own summary. The
# last line has the plain form "N passed, N failed", counting test cases of both passes.
.conformance-venv/bin/python - "$work_dir" admin user <<'EOF_SUMMARY'
import collections
import glob
import json
import sys

work_dir, passes = sys.argv[1], sys.argv[2:]
total_passed = total_failed = 0
for name in passes:
    operations, failed_cases = set(), set()
    case_ids = set()
    statuses = collections.Counter()
    checks = collections.defaultdict(collections.Counter)
    for path in glob.glob(f"{work_dir}/{name}/*.ndjson"):
        for line in open(path, encoding="utf-8"):
            event = json.loads(line).get("ScenarioFinished")
            if event is None:
                continue
            recorder = event["recorder"]
            operations.add(recorder["label"])
            case_ids.update(recorder.get("cases", {}))
            for case_id, results in recorder.get("checks", {}).items():
                for result in results:
                    checks[result["name"]][result["status"]] += 1
                    if result["status"] == "failure":
                        failed_cases.add(case_id)
            for interactions in recorder.get("interactions", {}).values():
                for interaction in interactions if isinstance(interactions, list) else [interactions]:
                    status = (interaction.get("response") or {}).get("status_code", "no response")
                    statuses[(interaction["request"]["method"], status)] += 1

    passed = sum(counts["success"] for counts in checks.values())
    failed = sum(counts["failure"] for counts in checks.values())
    print(
        f"{name} token: {len(operations)} operation(s), {len(case_ids)} test cases "
        f"({len(failed_cases)} failed), {sum(statuses.values())} recorded responses, "
        f"checks {passed} passed, {failed} failed"
    )
    for (method, status), count in sorted(statuses.items(), key=str):
        note = " (the CORS response of cargo lambda watch)" if (method, status) == ("OPTIONS", 200) else ""
        print(f"    {method} {status}: {count}{note}")
    for check, counts in sorted(checks.items()):
        print(f"    {check}: " + ", ".join(f"{count} {status}" for status, count in sorted(counts.items())))
    total_passed += len(case_ids - failed_cases)
    total_failed += len(failed_cases)

print(f"conformance: {total_passed} passed, {total_failed} failed")
EOF_SUMMARY

[[ -z $failed_passes ]] || fail "schemathesis found failures in the pass(es):$failed_passes"
succeeded=true
