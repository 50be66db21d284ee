#!/usr/bin/env bash
# The TypeScript client's and the proto contract's checks. Installs its own packages (npm ci, from the committed
# package-lock.json) the first time and whenever the lock file changes.
#
#   clients/typescript/test.sh lint       buf lint + buf breaking (against main's last committed protos/) + tsc
#   clients/typescript/test.sh generate   buf generate → clients/typescript/src/gen (git-ignored)
#   clients/typescript/test.sh test       the client's test against a live server: needs MOMENTS_TARGET and
#                                         MOMENTS_SAMPLE_VIDEO (tests/clients/test_typescript.py sets them)
#   clients/typescript/test.sh breaking   only buf breaking; BUF_AGAINST=<buf input> overrides what it compares to
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BIN="$HERE/node_modules/.bin"

install() {
  if [[ ! -x "$BIN/buf" || ! -x "$BIN/protoc-gen-es" || ! -x "$BIN/tsx" \
        || "$HERE/package-lock.json" -nt "$HERE/node_modules/.package-lock.json" ]]; then
    (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error)
  fi
}

generate() {
  install
  (cd "$ROOT" && "$BIN/buf" generate)
}

breaking() {
  install
  local against="${BUF_AGAINST:-}" tmp=""
  if [[ -z "$against" ]]; then
    if ! git -C "$ROOT" cat-file -e main:protos/moments/v1/moments.proto 2>/dev/null; then
      echo "buf breaking: branch main has no committed protos/ yet; nothing to compare against (ok)"
      return 0
    fi
    # main's last committed protos/, unpacked (works in shallow clones too)
    tmp="$(mktemp -d)"
    git -C "$ROOT" archive main protos/moments | tar -x -C "$tmp"  # the API only (buf.yaml excludes the rest)
    against="$tmp/protos"
  fi
  local rc=0
  (cd "$ROOT" && "$BIN/buf" breaking --against "$against") || rc=$?
  [[ -n "$tmp" ]] && rm -rf "$tmp"
  if [[ $rc -ne 0 ]]; then
    echo "buf breaking: protos/ breaks moments.v1 compared with main; only add fields (or start moments.v2)" >&2
    return $rc
  fi
  echo "buf breaking: ok (compared with main's protos/)"
}

lint() {
  install
  (cd "$ROOT" && "$BIN/buf" lint)
  echo "buf lint: ok"
  breaking
  generate
  (cd "$HERE" && "$BIN/tsc" --noEmit -p .)
  echo "tsc: ok"
}

run_tests() {
  generate
  (cd "$HERE" && node --import tsx --test test/*.test.ts)
}

case "${1:-lint}" in
  install) install ;;
  generate) generate ;;
  breaking) breaking ;;
  lint) lint ;;
  test) run_tests ;;
  *) echo "usage: $0 lint|generate|breaking|test|install" >&2; exit 2 ;;
esac
