#!/bin/sh
# The pull-request job of docs/ci.md, whole: validates the manifests,
# plans the change against the base revision, prints the plan in the log
# and posts it as a comment (plan-comment.sh, next to this script).
#
#   plan-job.sh <manifests-dir> <base-revision>
#
# The plan is written to $PLAN_FILE (default plan.md). Exit status: that of
# `touchline validate` when the manifests are invalid (the diagnostics are
# in the log), 2 when `touchline plan` could not run or the comment was not
# posted, 0 otherwise (a plan that changes boxes is not a failure).
# Environment: as plan-comment.sh (GIT_HOST, API_URL, REPOSITORY,
# PR_NUMBER, TOKEN).
set -eu

[ $# -eq 2 ] || { echo "plan-job: usage: plan-job.sh <manifests-dir> <base-revision>" >&2; exit 2; }
dir=$1
base=$2
out=${PLAN_FILE:-plan.md}

touchline validate "$dir"
set +e
touchline plan "$dir" --base "$base" > "$out"
code=$?
set -e
cat "$out"
if [ "$code" -gt 1 ]; then
  echo "plan-job: touchline plan could not run (exit $code); nothing posted" >&2
  exit 2
fi
sh "$(dirname "$0")/plan-comment.sh" "$out"
