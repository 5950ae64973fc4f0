#!/usr/bin/env bash
# The operator runbook's smoke test (§7): the governance lifecycle against
# one gateway, in 11 steps. Each step prints PASS, WARN (non-fatal) or
# FAIL (with the response body below it); the script exits 1 on any FAIL.
#
#   HOST=http://127.0.0.1:8080 TOKEN=$TOKEN COOP_ID=food-coop ./scripts/smoke-test.sh
#
# HOST defaults to http://127.0.0.1:8080. Without TOKEN the script logs in
# with `icnctl auth login` (icnctl on PATH, or ICNCTL=/path/to/icnctl),
# using the identity in ICNCTL_DATA_DIR (default ./data). COOP_ID names the
# co-op whose ledger step 10 reads; a co-op this node does not hold
# answers 404, which the step accepts. It creates a uniquely named domain
# and proposal per run and changes nothing else. Needs curl and jq.
set -uo pipefail

HOST="${HOST:-http://127.0.0.1:8080}"
HOST="${HOST%/}"
COOP_ID="${COOP_ID:-pilot-coop-1}"
ICNCTL="${ICNCTL:-icnctl}"

for tool in curl jq; do
  command -v "$tool" >/dev/null || { echo "FAIL $tool is required"; exit 1; }
done

if [ -z "${TOKEN:-}" ]; then
  TOKEN=$("$ICNCTL" --data-dir "${ICNCTL_DATA_DIR:-./data}" auth login --gateway "$HOST" --output token) || {
    echo "FAIL no TOKEN given and \`icnctl auth login\` failed"
    exit 1
  }
fi

passed=0; failed=0; skipped=0
BODY=""; CODE=""

# request METHOD PATH [JSON] [noauth]: sets CODE and BODY.
request() {
  local method=$1 path=$2 data=${3:-} auth=${4:-auth}
  local args=(-s -o /tmp/smoke-body.$$ -w '%{http_code}' --max-time 30 -X "$method")
  [ "$auth" = auth ] && args+=(-H "Authorization: Bearer $TOKEN")
  [ -n "$data" ] && args+=(-H 'Content-Type: application/json' -d "$data")
  CODE=$(curl "${args[@]}" "$HOST$path") || CODE=000
  BODY=$(cat /tmp/smoke-body.$$ 2>/dev/null || true)
  rm -f /tmp/smoke-body.$$
}

# check NAME EXPECTED-CODES... [-- DETAIL]: PASS when CODE is one of them.
check() {
  local name=$1; shift
  local detail="" ok=0
  while [ $# -gt 0 ]; do
    if [ "$1" = "--" ]; then detail=$2; break; fi
    [ "$CODE" = "$1" ] && ok=1
    shift
  done
  if [ $ok = 1 ]; then
    echo "PASS $name ($CODE)${detail:+ $detail}"
    passed=$((passed + 1))
    return 0
  fi
  echo "FAIL $name ($CODE)"
  echo "$BODY"
  failed=$((failed + 1))
  return 1
}

stamp="$(date +%s)-$$"
DOMAIN_ID="ops-test-$stamp"

# 1
request GET /v1/health "" noauth
check "Gateway health check" 200

# 2
request GET /v1/gov/domains "" noauth
check "Unauthenticated request rejected" 401

# 3
request POST /v1/gov/domains "{\"id\": \"$DOMAIN_ID\", \"name\": \"Ops Test Domain\", \"profile\": \"cooperative_default\", \"quorum_percent\": 1, \"approval_percent\": 51, \"voting_period_days\": 1, \"members\": []}"
if [ "$CODE" = 409 ] || { [ "$CODE" = 400 ] && echo "$BODY" | grep -q "already exists"; }; then
  echo "WARN Create governance domain ($CODE) already exists"
  passed=$((passed + 1))
else
  check "Create governance domain" 201 200
fi

# 4
request POST /v1/gov/proposals "{\"domain_id\": \"$DOMAIN_ID\", \"title\": \"Test Proposal $stamp\", \"description\": \"Manual ops test proposal.\", \"payload\": {\"type\": \"text\", \"body\": \"Approve routine maintenance window.\"}}"
PROPOSAL_ID=$(echo "$BODY" | jq -r '.id // empty' 2>/dev/null)
if [ -n "$PROPOSAL_ID" ]; then
  check "Create proposal" 201 200 -- "→ id=$PROPOSAL_ID"
else
  CODE="$CODE (no id)"; check "Create proposal" 201 200
fi

# 5
request POST "/v1/gov/proposals/$PROPOSAL_ID/open" '{"voting_period_seconds": 3600}'
check "Open proposal" 200 -- "state=$(echo "$BODY" | jq -r '.state' 2>/dev/null)"

# 6
request POST "/v1/gov/proposals/$PROPOSAL_ID/vote" '{"choice": "for", "comment": "Approved by ops."}'
check "Cast vote" 200 201

# 7
request POST "/v1/gov/proposals/$PROPOSAL_ID/close" '{}'
DECISION_HASH=$(echo "$BODY" | jq -r '.decision_receipt_id // empty' 2>/dev/null)
check "Close proposal" 200 -- "outcome=$(echo "$BODY" | jq -r '.outcome' 2>/dev/null)"

# 8
request GET "/v1/gov/proposals/$PROPOSAL_ID"
check "Get closed proposal" 200 -- "state=$(echo "$BODY" | jq -r '.state' 2>/dev/null)"

# 9
request GET /v1/registry/decisions
check "List registry decisions" 200 -- "count=$(echo "$BODY" | jq 'length' 2>/dev/null)"

# 10
request GET "/v1/ledger/$COOP_ID/entries/by-decision?decision_hash=${DECISION_HASH:-$(printf '0%.0s' {1..64})}"
check "Ledger entries-by-decision endpoint reachable" 200 404

# 11
request GET /v1/gov/proposals
check "List proposals" 200

echo
echo "Results: $passed passed, $failed failed, $skipped skipped ($((passed + failed + skipped)) total)"
if [ $failed -gt 0 ]; then
  echo "SMOKE FAIL"
  exit 1
fi
echo "SMOKE PASS"
