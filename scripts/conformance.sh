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

readonly SCRIPT_NAME=conformance
readonly MAKE_TARGET=conformance
# shellcheck source=scripts/local_stack.sh
source scripts/local_stack.sh

[[ $MAX_EXAMPLES =~ ^[1-9][0-9]*$ ]] || fail "invalid CONFORMANCE_MAX_EXAMPLES '$MAX_EXAMPLES'; expected a positive integer"
[[ $SEED =~ ^[0-9]+$ ]] || fail "invalid CONFORMANCE_SEED '$SEED'; expected a non-negative integer"

# --- Tools -------------------------------------------------------------------------------

require_tools
[[ -x .conformance-venv/bin/schemathesis ]] || fail ".conformance-venv/bin/schemathesis not found; run \`make conformance\`, which installs it"
[[ -f $CONTRACT ]] || fail "$CONTRACT not found"
scrub_environment '^SCHEMATHESIS_'
start_work_dir .conformance "logs and reports"

build_binaries

# --- dynalite ----------------------------------------------------------------------------

start_dynalite
export_local_settings "$TABLE" conformance

echo "==> Creating and seeding $TABLE"
cargo run --quiet --locked --example learnings_table -- seed

# --- cargo lambda watch ------------------------------------------------------------------

start_watch
base_url=http://127.0.0.1:$watch_port/lambda-url/bootstrap

# Sends a request without a token, which the function rejects with 401 before any DynamoDB
# call, and sets ready_status. curl reports 000 while nothing listens yet.
probe_without_token() {
  ready_status=$(curl --silent --max-time 10 --output /dev/null --write-out '%{http_code}' \
    -X DELETE "$base_url/learnings/users/readiness-probe") && [[ $ready_status != 000 ]]
}
wait_until_ready probe_without_token
if [[ $ready_status != 401 ]]; then
  tail -n 20 "$work_dir/watch.log" >&2
  fail "the function returned status $ready_status for a request without a token, expected 401"
fi

check_loopback_listeners

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
