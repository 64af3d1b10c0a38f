# Shared by scripts/demo.sh and scripts/conformance.sh, which source it: the local stack of
# dynalite and the function under `cargo lambda watch`, both on 127.0.0.1, with process
# helpers and a cleanup trap that stops everything the script started.
#
# The sourcing script sets SCRIPT_NAME (the prefix of its messages), MAKE_TARGET (the make
# target that installs its tools) and STOP_TIMEOUT, DYNALITE_TIMEOUT and READY_TIMEOUT (in
# seconds) before it calls these functions, and runs from the repository root.

fail() {
  echo "$SCRIPT_NAME: $*" >&2
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
    echo "$SCRIPT_NAME: $name (pid $pid) still running ${STOP_TIMEOUT} s after SIGTERM; sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
}

# Checks for the tools that the Makefile installs and for the commands $1... on PATH, and
# puts .venv/bin first on PATH. Only the Makefile's tools are used, so that a hand-installed
# cargo-lambda of another version cannot change the result.
require_tools() {
  [[ -x .venv/bin/cargo-lambda ]] || fail ".venv/bin/cargo-lambda not found; run \`make $MAKE_TARGET\`, which installs it"
  [[ -f node_modules/dynalite/package.json ]] || fail "node_modules/dynalite not found; run \`make $MAKE_TARGET\`, which runs npm ci"
  export PATH="$PWD/.venv/bin:$PATH"
  local tool
  for tool in node cargo curl python3 ss pgrep setpriv "$@"; do
    command -v "$tool" >/dev/null || fail "$tool not found on PATH; \`make $MAKE_TARGET\` needs it"
  done
}

# Unsets every AWS_, AUTH_, JWT_ and LEARNINGS_ variable, and those that match the extended
# regular expression $1 if given. The scripts set the whole AWS and function configuration
# themselves: a developer's own AWS_PROFILE or AWS_ENDPOINT_URL could otherwise send requests
# to a real account, and AUTH_* settings would change the statuses the scripts expect.
scrub_environment() {
  local pattern='^(AWS_|AUTH_|JWT_|LEARNINGS_)'
  if [[ -n ${1:-} ]]; then
    pattern="$pattern|$1"
  fi
  local name
  while read -r name; do
    unset "$name"
  done < <(compgen -e | grep -E "$pattern" || true)
}

dynalite_pid=""
dynalite_stdin="" # file descriptor of the write end of dynalite's stdin
dynalite_port=""
watch_pid=""
watch_port=""
work_dir=""
succeeded=false

# Creates a new working directory under $1 and installs the trap that stops every process
# on exit. The directory is removed after a run that set `succeeded=true`, and kept after a
# failure, when the message names it with $2, a description of its files.
start_work_dir() {
  mkdir -p "$1"
  work_dir=$(mktemp -d "$PWD/$1/run.XXXXXX")
  kept_files=$2
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

cleanup() {
  set +e
  if [[ -n $watch_pid ]]; then
    # The function instance runs in a session of its own, so it is collected before
    # cargo lambda watch stops and then checked separately.
    local function_pids pid
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
    echo "$SCRIPT_NAME: $kept_files kept in ${work_dir#"$PWD"/}" >&2
  fi
}

# Builds the table and token examples and the function's debug binary. Building here shows
# the compiler's progress and errors on the terminal, and cargo lambda watch later finds the
# binary up to date. The two builds are separate because the examples also enable the
# dev-dependencies' features, and the function must be built without them.
build_binaries() {
  echo "==> Building the table example, the token example and the function (debug)"
  cargo build --locked --example learnings_table --example sign_token
  cargo build --locked --bin bootstrap
}

# Starts dynalite on a free port of 127.0.0.1 and sets dynalite_pid and dynalite_port.
start_dynalite() {
  echo "==> Starting dynalite"
  mkfifo "$work_dir/dynalite.stdin"
  node tests/support/dynalite.js <"$work_dir/dynalite.stdin" >"$work_dir/dynalite.out" 2>"$work_dir/dynalite.log" &
  dynalite_pid=$!
  # This shell keeps the write end of the FIFO open, so the kernel closes it on any exit of
  # the script, SIGKILL included, and dynalite then stops by itself.
  exec {dynalite_stdin}>"$work_dir/dynalite.stdin"

  local deadline=$((SECONDS + DYNALITE_TIMEOUT))
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
}

# Exports the settings that the table example and the function share, for table $1, with
# the dummy credentials $2. The credentials and AWS_EC2_METADATA_DISABLED keep the SDK from
# looking for credentials anywhere else, the instance metadata address included. The
# profile files are paths that do not exist, so no profile of the developer is read. Bearer
# tokens are verified with the test-only RSA key.
export_local_settings() {
  export LEARNINGS_TABLE=$1
  export AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:$dynalite_port
  export AWS_REGION=us-east-1
  export AWS_ACCESS_KEY_ID=$2
  export AWS_SECRET_ACCESS_KEY=$2
  export AWS_EC2_METADATA_DISABLED=true
  export AWS_CONFIG_FILE=$work_dir/no-aws-config
  export AWS_SHARED_CREDENTIALS_FILE=$work_dir/no-aws-credentials
  JWT_VERIFICATION_KEY=$(cat tests/fixtures/keys/rsa-public.pem)
  export JWT_VERIFICATION_KEY
}

# Starts cargo lambda watch on a free port of 127.0.0.1 and sets watch_pid and watch_port.
start_watch() {
  # A free port picked by the kernel, because another local server may hold 9000, the
  # default. Another process could take it before cargo lambda watch binds it, and the
  # readiness check then fails with the watch log.
  watch_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

  echo "==> Starting cargo lambda watch on 127.0.0.1:$watch_port"
  # --ignore-changes keeps the binary built above for the whole run, because other edits of
  # src/ during the run would otherwise rebuild and restart the function between two
  # requests. The kernel sends cargo lambda watch SIGTERM if the script dies without running
  # its trap, on SIGKILL for example, and cargo lambda watch then stops the function too.
  # The FIFO's write end is closed in this child, so that only the script keeps dynalite
  # alive.
  setpriv --pdeathsig TERM cargo lambda watch --ignore-changes \
    --invoke-address 127.0.0.1 --invoke-port "$watch_port" \
    >"$work_dir/watch.log" 2>&1 {dynalite_stdin}>&- &
  watch_pid=$!
}

# Runs the command $1... until it succeeds, and fails when cargo lambda watch or the function
# exits first, or after READY_TIMEOUT. cargo lambda watch starts the function on the first
# request, not at start-up, so the command is that first request.
wait_until_ready() {
  local ready_start=$SECONDS deadline=$((SECONDS + READY_TIMEOUT))
  until "$@"; do
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
  echo "the function responded after $((SECONDS - ready_start)) s"
}

# Checks that every listening TCP socket of dynalite, cargo lambda watch and the function
# is on 127.0.0.1, and prints them as "address (command)".
check_loopback_listeners() {
  local listening="" pid command_name address
  for pid in $dynalite_pid $watch_pid $(descendants "$watch_pid"); do
    command_name=$(ps -o comm= -p "$pid" || echo exited)
    for address in $(ss -H -ltnp | awk -v pid="pid=$pid," 'index($0, pid) { print $4 }'); do
      [[ $address == 127.0.0.1:* ]] || fail "$command_name (pid $pid) listens on $address, not on 127.0.0.1"
      listening="$listening $address ($command_name)"
    done
  done
  [[ $listening == *" 127.0.0.1:$watch_port "* ]] || fail "cargo lambda watch does not listen on 127.0.0.1:$watch_port"
  echo "listening sockets:$listening; none on 0.0.0.0 or [::]"
}
