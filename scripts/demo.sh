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

fail() {
  echo "demo: $*" >&2
  exit 1
}

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
    echo "demo: $name (pid $pid) still running ${STOP_TIMEOUT} s after SIGTERM; sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
}

# --- Tools -------------------------------------------------------------------------------

# Only the tools that the Makefile installs are used, so that a hand-installed
# cargo-lambda of another version cannot change the result.
[[ -x .venv/bin/cargo-lambda ]] || fail ".venv/bin/cargo-lambda not found; run the demo with \`make demo\`, which installs it"
[[ -f node_modules/dynalite/package.json ]] || fail "node_modules/dynalite not found; run the demo with \`make demo\`, which runs npm ci"
export PATH="$PWD/.venv/bin:$PATH"
for tool in node cargo curl python3 ss pgrep setpriv timeout; do
  command -v "$tool" >/dev/null || fail "$tool not found on PATH; the demo needs it"
done

# The demo sets the whole AWS and function configuration itself. A developer's own
# AWS_PROFILE or AWS_ENDPOINT_URL could otherwise send requests to a real account, and AUTH_*
# settings would change the statuses that events/expected.json lists for the defaults.
while read -r name; do
  unset "$name"
done < <(compgen -e | grep -E '^(AWS_|AUTH_|JWT_|LEARNINGS_)' || true)

mkdir -p .demo
work_dir=$(mktemp -d "$PWD/.demo/run.XXXXXX")
mkdir "$work_dir/responses"

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
    echo "demo: logs and responses kept in ${work_dir#"$PWD"/}" >&2
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- Build -------------------------------------------------------------------------------

# Building both targets here shows the compiler's progress and errors on the terminal.
# Later the example runs with --quiet, and cargo lambda watch finds the function's debug
# binary up to date. The two builds are separate because the example also enables the
# dev-dependencies' features, and the function must be built without them.
echo "==> Building the table example, the token example and the function (debug)"
cargo build --locked --example learnings_table --example sign_token
cargo build --locked --bin bootstrap

table_tool() {
  cargo run --quiet --locked --example learnings_table -- "$@"
}

# --- dynalite ----------------------------------------------------------------------------

echo "==> Starting dynalite"
mkfifo "$work_dir/dynalite.stdin"
node tests/support/dynalite.js <"$work_dir/dynalite.stdin" >"$work_dir/dynalite.out" 2>"$work_dir/dynalite.log" &
dynalite_pid=$!
# This shell keeps the write end of the FIFO open, so the kernel closes it on any exit of
# the script, SIGKILL included, and dynalite then stops by itself.
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

# The same settings serve the table example and the function. The dummy credentials and
# AWS_EC2_METADATA_DISABLED keep the SDK from looking for credentials anywhere else, the
# instance metadata address included. The profile files are paths that do not exist, so
# no profile of the developer is read.
export LEARNINGS_TABLE=$TABLE
export AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:$dynalite_port
export AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=demo
export AWS_SECRET_ACCESS_KEY=demo
export AWS_EC2_METADATA_DISABLED=true
export AWS_CONFIG_FILE=$work_dir/no-aws-config
export AWS_SHARED_CREDENTIALS_FILE=$work_dir/no-aws-credentials
# The Bearer-token events and the curl call carry tokens signed by the test-only RSA key.
JWT_VERIFICATION_KEY=$(cat tests/fixtures/keys/rsa-public.pem)
export JWT_VERIFICATION_KEY

echo "==> Creating and seeding $TABLE"
table_tool seed
initial_counts=$(table_tool count)
echo "items per user: ${initial_counts//$'\n'/, }"

# --- cargo lambda watch ------------------------------------------------------------------

# A free port picked by the kernel, because another local server may hold 9000, the
# default. Another process could take it before cargo lambda watch binds it, and the
# readiness check below then fails with the watch log.
watch_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

echo "==> Starting cargo lambda watch on 127.0.0.1:$watch_port"
# --ignore-changes keeps the binary built above for the whole run, because other edits of
# src/ during the run would otherwise rebuild and restart the function between two events.
# The kernel sends cargo lambda watch SIGTERM if the script dies without running its trap,
# on SIGKILL for example, and cargo lambda watch then stops the function too. The FIFO's
# write end is closed in this child, so that only the script keeps dynalite alive.
setpriv --pdeathsig TERM cargo lambda watch --ignore-changes \
  --invoke-address 127.0.0.1 --invoke-port "$watch_port" \
  >"$work_dir/watch.log" 2>&1 {dynalite_stdin}>&- &
watch_pid=$!

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

# cargo lambda watch starts the function on the first request, not at start-up. An empty
# event is that first request, because the function rejects it with 400 before any
# DynamoDB call, so the table stays as seeded.
ready_start=$SECONDS
deadline=$((SECONDS + READY_TIMEOUT))
until invoke "$PROBE_TIMEOUT" "$work_dir/ready.json" --data-ascii '{}'; do
  if ! kill -0 "$watch_pid" 2>/dev/null; then
    tail -n 20 "$work_dir/watch.log" >&2
    fail "cargo lambda watch exited; the lines above are the end of its log"
  fi
  # cargo lambda watch 1.9.2 logs "command exited" when the function process ends, for
  # example on invalid configuration. It does not start it again, so the requests time out.
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
ready_status=$(status_of "$work_dir/ready.json")
if [[ $ready_status != 400 ]]; then
  tail -n 20 "$work_dir/watch.log" >&2
  fail "the function returned status $ready_status for an empty event, expected 400"
fi
echo "the function responded after $((SECONDS - ready_start)) s"

# Checks that every listening TCP socket of the demo's processes is on 127.0.0.1, and
# prints them as "address (command)".
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
