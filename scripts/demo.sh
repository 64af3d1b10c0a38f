#!/usr/bin/env bash
# Runs the real function under `cargo lambda watch` against a seeded dynalite, sends it every
# sample event of events/expected.json in the order listed there, and checks each response
# status and the table left at the end. Exits non-zero if anything differs.
#
# Run it with `make demo`, which installs node_modules (dynalite) and .venv (cargo-lambda)
# first. Every server of the demo listens on 127.0.0.1 only. Working files go to a new
# directory under .demo/, which is removed after a successful run and kept after a failure.
set -euo pipefail

cd "$(dirname "$0")/.."

readonly TABLE=agno_learnings
readonly DYNALITE_TIMEOUT=15 # seconds for dynalite to print its port
readonly READY_TIMEOUT=300   # seconds for the function to respond to its first request
readonly PROBE_TIMEOUT=10    # seconds for one readiness request
readonly INVOKE_TIMEOUT=60   # seconds for one sample event
readonly STOP_TIMEOUT=10     # seconds for a server to exit before it gets SIGKILL

# The events delete every seeded learning except user-f's, which only the rejected 403 and
# 401 events target, and user-d's outside the entity_memory type, because user-d's event
# sends ?learning_type=entity_memory.
# The Bearer-token events delete user-g's entity_memory learnings, and the curl call after
# them, through the function URL, deletes the rest.
readonly EXPECTED_COUNTS="user-a 0
user-b 0
idp|user-c 0
user-d 3
user-e 0
user-f 1
user-g 0"
readonly EXPECTED_KEYS="user-d entity_memory_v2#acme
user-d user_memory
user-d user_profile
user-f user_profile"

readonly SCRIPT_NAME=demo
readonly MAKE_TARGET=demo
# shellcheck source=scripts/local_stack.sh
source scripts/local_stack.sh

# --- Tools -------------------------------------------------------------------------------

require_tools timeout
scrub_environment
start_work_dir .demo "logs and responses"
mkdir "$work_dir/responses"

build_binaries

table_tool() {
  cargo run --quiet --locked --example learnings_table -- "$@"
}

# --- dynalite ----------------------------------------------------------------------------

start_dynalite
export_local_settings "$TABLE" demo

echo "==> Creating and seeding $TABLE"
table_tool seed
initial_counts=$(table_tool count)
echo "items per user: ${initial_counts//$'\n'/, }"

# --- cargo lambda watch ------------------------------------------------------------------

start_watch

# Sends $3... to the function with a limit of $1 seconds, and writes the response to $2
# and cargo lambda invoke's messages to $2.stderr.
invoke() {
  local seconds=$1 output=$2
  shift 2
  timeout "$seconds" cargo lambda invoke \
    --invoke-address 127.0.0.1 --invoke-port "$watch_port" \
    --output-format json "$@" bootstrap >"$output" 2>"$output.stderr"
}

# Prints the statusCode of the Lambda response in file $1, or "none".
status_of() {
  python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["statusCode"])' "$1" 2>/dev/null || echo none
}

# An empty event is the first request, because the function rejects it with 400 before any
# DynamoDB call, so the table stays as seeded.
wait_until_ready invoke "$PROBE_TIMEOUT" "$work_dir/ready.json" --data-ascii '{}'
ready_status=$(status_of "$work_dir/ready.json")
if [[ $ready_status != 400 ]]; then
  tail -n 20 "$work_dir/watch.log" >&2
  fail "the function returned status $ready_status for an empty event, expected 400"
fi

check_loopback_listeners

# --- Events ------------------------------------------------------------------------------

echo "==> Invoking the events of events/expected.json in order"
mapfile -t events < <(python3 -c '
import json, sys
for name, status in json.load(open(sys.argv[1])).items():
    print(name, status)
' events/expected.json)
((${#events[@]} > 0)) || fail "events/expected.json lists no events"

passed=0
failed=0
for line in "${events[@]}"; do
  read -r file expected <<<"$line"
  [[ -f events/$file ]] || fail "events/expected.json lists $file, which is not in events/"

  response=$work_dir/responses/$file
  if invoke "$INVOKE_TIMEOUT" "$response" --data-file "events/$file"; then
    actual=$(status_of "$response")
  else
    actual=none
  fi

  if [[ $actual == "$expected" ]]; then
    verdict=ok
    passed=$((passed + 1))
  else
    verdict=DIFFERENT
    failed=$((failed + 1))
  fi
  printf '%-32s expected %s  actual %-4s  %s\n' "$file" "$expected" "$actual" "$verdict"
  if [[ $verdict != ok ]]; then
    sed 's/^/    /' "$response" "$response.stderr"
  fi

  counts=$(table_tool count)
  echo "    left: ${counts//$'\n'/, }"
done

# --- curl through the function URL --------------------------------------------------------

# cargo lambda watch serves the function as a function URL under /lambda-url/<function>/, and
# turns each HTTP request into a payload 2.0 event with no authorizer, so the function
# verifies the Bearer token itself.
echo "==> curl with a Bearer token through the function URL"
token=$(cargo run --quiet --locked --example sign_token -- user-g)
function_url=http://127.0.0.1:$watch_port/lambda-url/bootstrap/learnings/users/user-g
echo "curl -X DELETE -H 'Authorization: Bearer <token for user-g>' $function_url"
curl_status=$(curl --silent --show-error --max-time "$INVOKE_TIMEOUT" --output "$work_dir/curl.body" \
  --write-out '%{http_code}' -X DELETE -H "Authorization: Bearer $token" "$function_url" || echo none)
if [[ $curl_status == 204 ]]; then
  verdict=ok
  passed=$((passed + 1))
else
  verdict=DIFFERENT
  failed=$((failed + 1))
fi
printf '%-32s expected %s  actual %-4s  %s\n' "curl function URL" 204 "$curl_status" "$verdict"
[[ $verdict == ok ]] || sed 's/^/    /' "$work_dir/curl.body"
counts=$(table_tool count)
echo "    left: ${counts//$'\n'/, }"

# --- Summary -----------------------------------------------------------------------------

echo "==> Summary"
final_counts=$(table_tool count)
final_keys=$(table_tool list)
table_matches=true
if [[ $final_counts != "$EXPECTED_COUNTS" || $final_keys != "$EXPECTED_KEYS" ]]; then
  table_matches=false
fi

echo "events: $passed passed, $failed failed"
if $table_matches; then
  echo "final table: as expected (${final_keys//$'\n'/, })"
else
  echo "final table: DIFFERENT"
  echo "  expected items:"
  sed 's/^/    /' <<<"$EXPECTED_KEYS"
  echo "  actual items:"
  sed 's/^/    /' <<<"$final_keys"
fi
echo "finished in ${SECONDS} s"

if ((failed > 0)) || ! $table_matches; then
  exit 1
fi
succeeded=true
