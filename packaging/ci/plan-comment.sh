#!/bin/sh
# Posts `touchline plan`'s Markdown as a comment on a pull request
# (GitHub, Gitea/Forgejo) or a merge request (GitLab). Run by the CI jobs
# of docs/ci.md; needs curl and jq.
#
#   plan-comment.sh plan.md
#
# Environment:
#   GIT_HOST     github | gitea | gitlab
#   API_URL      https://api.github.com, https://<host>/api/v1, https://<host>/api/v4
#   REPOSITORY   owner/name (GitLab: the project path or id)
#   PR_NUMBER    the pull request's number (GitLab: the merge request's iid)
#   TOKEN        a token that may comment (GitHub: GITHUB_TOKEN with
#                pull-requests: write; GitLab: a project token with api)
set -eu

die() {
  echo "plan-comment: $*" >&2
  exit 2
}

[ $# -eq 1 ] || die "usage: plan-comment.sh <plan.md>"
[ -r "$1" ] || die "cannot read $1"
for v in GIT_HOST API_URL REPOSITORY PR_NUMBER TOKEN; do
  eval "val=\${$v:-}"
  [ -n "$val" ] || die "$v is not set"
done
case "$PR_NUMBER" in
  *[!0-9]*) die "PR_NUMBER must be a number, not '$PR_NUMBER'" ;;
esac
api=${API_URL%/}

# A comment holds at most 65536 characters on GitHub: cut a longer plan
# and say so.
body=$(jq -Rs 'if length > 65000 then .[0:65000] + "\n\n…(cut: the whole plan is in the job log)" else . end | {body: .}' <"$1")

case "$GIT_HOST" in
  github)
    url="$api/repos/$REPOSITORY/issues/$PR_NUMBER/comments"
    auth="Authorization: Bearer $TOKEN"
    ;;
  gitea)
    url="$api/repos/$REPOSITORY/issues/$PR_NUMBER/comments"
    auth="Authorization: token $TOKEN"
    ;;
  gitlab)
    project=$(jq -rn --arg p "$REPOSITORY" '$p|@uri')
    url="$api/projects/$project/merge_requests/$PR_NUMBER/notes"
    auth="PRIVATE-TOKEN: $TOKEN"
    ;;
  *) die "GIT_HOST must be github, gitea or gitlab, not '$GIT_HOST'" ;;
esac

printf '%s' "$body" | curl --silent --show-error --fail-with-body \
  --max-time 30 --retry 3 --retry-all-errors \
  -X POST -H "$auth" -H "Content-Type: application/json" \
  -H "Accept: application/json" --data-binary @- "$url" >/dev/null \
  || die "the comment was not posted to $url"
echo "plan-comment: posted to $url"
