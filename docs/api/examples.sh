#!/usr/bin/env bash
# Examples of the ICN gateway API (docs/api.md), run against a live node.
#
#   ./docs/api/examples.sh                      # health check only (no token)
#   TOKEN=$(icnctl auth login --output token) MEMBER_DID=did:icn:… ./docs/api/examples.sh
#
# With a token it creates a co-op (examples-<time>), adds MEMBER_DID as a
# member, records a settlement to them, reads positions and history, then
# runs a governance domain of the co-op through a proposal. Each call is
# printed with its answer; the script stops at the first unexpected status.
set -euo pipefail

HOST="${HOST:-http://127.0.0.1:8080}"
HOST="${HOST%/}"

call() { # METHOD PATH EXPECTED [JSON]
  local method=$1 path=$2 expected=$3 data=${4:-}
  local args=(-s -w '\n%{http_code}' -X "$method")
  [ -n "${TOKEN:-}" ] && args+=(-H "Authorization: Bearer $TOKEN")
  [ -n "$data" ] && args+=(-H 'Content-Type: application/json' -d "$data")
  local out code
  out=$(curl "${args[@]}" "$HOST$path")
  code=${out##*$'\n'}
  BODY=${out%$'\n'*}
  echo "$method $path → $code" >&2
  echo "$BODY" | jq . >&2 2>/dev/null || echo "$BODY" >&2
  if [ "$code" != "$expected" ]; then
    echo "unexpected status $code (wanted $expected)" >&2
    exit 1
  fi
}

call GET /v1/health 200
[ -z "${TOKEN:-}" ] && { echo "health only: set TOKEN for the rest" >&2; exit 0; }
: "${MEMBER_DID:?set MEMBER_DID to a second DID (icnctl --data-dir other id init)}"

COOP="examples-$(date +%s)"
ME=$(echo "$TOKEN" | cut -d. -f2 | tr '_-' '/+' | { base64 -d 2>/dev/null || true; } | jq -r .sub 2>/dev/null || true)

# Co-ops and members
call POST /v1/coops 201 "{\"id\": \"$COOP\", \"name\": \"Downtown Food Cooperative\", \"description\": \"A community food buying club\", \"default_credit_limit\": 20, \"units\": [\"hours\"]}"
call GET "/v1/coops/$COOP" 200
call POST "/v1/coops/$COOP/members" 201 "{\"did\": \"$MEMBER_DID\", \"role\": \"member\"}"
call GET "/v1/coops/$COOP/members" 200

# Ledger
call POST "/v1/ledger/$COOP/settle" 201 "{\"to\": \"$MEMBER_DID\", \"amount\": 2, \"unit\": \"hours\", \"memo\": \"Garden help - 2 hours weeding\"}"
call POST "/v1/ledger/$COOP/settle" 422 "{\"to\": \"$MEMBER_DID\", \"amount\": 50, \"unit\": \"hours\", \"memo\": \"beyond the credit limit\"}"
call GET "/v1/ledger/$COOP/position/$MEMBER_DID" 200
call GET "/v1/ledger/$COOP/history?limit=10" 200
call GET "/v1/ledger/$COOP/balance/$MEMBER_DID" 404   # legacy vocabulary: not served

# Governance in a domain of the co-op
DOMAIN="$COOP-board"
call POST /v1/gov/domains 201 "{\"id\": \"$DOMAIN\", \"name\": \"Board\", \"coop_id\": \"$COOP\", \"quorum_percent\": 1, \"members\": [\"$MEMBER_DID\"]}"
call POST "/v1/gov/domains/$DOMAIN/proposals" 201 '{"title": "Approve new supplier contract", "description": "Vote to approve the contract with Green Valley Farms", "kind": "text"}'
PROPOSAL=$(echo "$BODY" | jq -r .id)
call POST "/v1/gov/proposals/$PROPOSAL/open" 200 '{"voting_period_seconds": 3600}'
call POST "/v1/gov/proposals/$PROPOSAL/vote" 200 '{"choice": "for"}'
call GET "/v1/gov/proposals/$PROPOSAL/vote" 200
call POST "/v1/gov/proposals/$PROPOSAL/close" 200 '{}'
RECEIPT=$(echo "$BODY" | jq -r .decision_receipt_id)
call GET "/v1/ledger/$COOP/entries/by-decision?decision_hash=$RECEIPT" 200
call GET "/v1/registry/decisions?coop_id=$COOP" 200

# The co-op document itself, as JSON
DOC=$(curl -s -H "Authorization: Bearer $TOKEN" "$HOST/v1/coops/$COOP" | jq -r .doc_id)
call GET "/v1/docs/$DOC" 200
echo "examples done${ME:+ as $ME}" >&2
