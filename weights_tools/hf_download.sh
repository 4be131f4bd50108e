#!/usr/bin/env bash
# hf_download.sh MODEL_ID [REVISION]
#
# Downloads the files clipeval needs for a Hugging Face model (config.json, model.safetensors,
# preprocessor and tokenizer files) into the standard HF cache layout, so that clipeval, and
# transformers itself, find the model by its id:
#
#   $CACHE/models--ORG--NAME/blobs/<etag>             file contents, named by their ETag
#   $CACHE/models--ORG--NAME/snapshots/<commit>/FILE  -> ../../blobs/<etag>
#   $CACHE/models--ORG--NAME/refs/<revision>          the commit the revision resolved to
#
# CACHE is $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub (as huggingface_hub).
# Honours HF_ENDPOINT (default https://huggingface.co) and HF_TOKEN (sent as a Bearer token).
# Interrupted downloads resume (curl -C -) from blobs/<etag>.incomplete; LFS files whose ETag
# is a sha256 are verified. Needs bash, curl and sha256sum.
set -euo pipefail

usage() {
  echo "usage: $0 MODEL_ID [REVISION]   (e.g. $0 openai/clip-vit-base-patch32)" >&2
  exit 2
}
[ $# -ge 1 ] && [ $# -le 2 ] || usage
model_id=$1
revision=${2:-main}
case "$model_id" in
  */*/* | /* | *..* | "" ) echo "hf_download: '$model_id' is not a model id (ORG/NAME)" >&2; exit 2 ;;
esac
endpoint=${HF_ENDPOINT:-https://huggingface.co}
endpoint=${endpoint%/}
if [ -n "${HF_HUB_CACHE:-}" ]; then cache=$HF_HUB_CACHE
elif [ -n "${HF_HOME:-}" ]; then cache=$HF_HOME/hub
else cache=$HOME/.cache/huggingface/hub; fi
repo_dir="$cache/models--${model_id//\//--}"

curl_args=(--silent --show-error --fail --location --retry 3 --retry-delay 1 --connect-timeout 20)
if [ -n "${HF_TOKEN:-}" ]; then curl_args+=(--header "Authorization: Bearer $HF_TOKEN"); fi

# Required files, then optional ones (a model has either vocab.json+merges.txt or tokenizer.json).
required=(config.json model.safetensors preprocessor_config.json)
optional=(tokenizer_config.json special_tokens_map.json vocab.json merges.txt tokenizer.json)

mkdir -p "$repo_dir/blobs" "$repo_dir/refs"
commit=""

# HEAD without following redirects: the resolve endpoint answers with X-Repo-Commit and, for LFS
# files, X-Linked-Etag (the sha256); ETag otherwise (huggingface_hub reads the same headers).
head_info() { # file -> prints "status commit etag"
  local url="$endpoint/$model_id/resolve/$revision/$1" hdr status rc etag linked repo_commit
  set +e
  hdr=$(curl --silent --show-error --head --connect-timeout 20 \
        ${HF_TOKEN:+--header "Authorization: Bearer $HF_TOKEN"} "$url" | tr -d '\r')
  rc=$?
  set -e
  [ $rc -eq 0 ] || { echo "hf_download: cannot reach $url (curl exit $rc)" >&2; return 1; }
  status=$(printf '%s\n' "$hdr" | awk 'toupper($1) ~ /^HTTP\// {s=$2} END {print s}')
  repo_commit=$(printf '%s\n' "$hdr" | awk -F': *' 'tolower($1)=="x-repo-commit" {print $2}' | tail -1)
  linked=$(printf '%s\n' "$hdr" | awk -F': *' 'tolower($1)=="x-linked-etag" {print $2}' | tail -1)
  etag=$(printf '%s\n' "$hdr" | awk -F': *' 'tolower($1)=="etag" {print $2}' | tail -1)
  [ -n "$linked" ] && etag=$linked
  etag=${etag#W/}
  etag=${etag//\"/}
  echo "${status:-000} ${repo_commit:--} ${etag:--}"
}

fetch() { # file required(0/1)
  local file=$1 req=$2 info status rc etag blob url
  info=$(head_info "$file") || return 1
  read -r status rc etag <<<"$info"
  case "$status" in
    200|302|301|307|308) ;;
    401|403) echo "hf_download: $model_id/$file: access denied (HTTP $status): set HF_TOKEN" >&2; return 1 ;;
    404) if [ "$req" = 1 ]; then
           echo "hf_download: $model_id/$file not found at $endpoint (HTTP 404)" >&2; return 1
         fi
         return 0 ;;
    *) echo "hf_download: $model_id/$file: HTTP $status from $endpoint" >&2; return 1 ;;
  esac
  if [ "$rc" = "-" ] || [ "$etag" = "-" ]; then
    echo "hf_download: $endpoint did not send X-Repo-Commit/ETag for $file (not a Hub endpoint?)" >&2
    return 1
  fi
  case "$etag" in */*|*..*) echo "hf_download: bad ETag '$etag' for $file" >&2; return 1 ;; esac
  if [ -z "$commit" ]; then commit=$rc; fi
  blob="$repo_dir/blobs/$etag"
  url="$endpoint/$model_id/resolve/$commit/$file"
  if [ ! -f "$blob" ]; then
    echo "hf_download: $model_id/$file" >&2
    local tries=0
    until curl "${curl_args[@]}" --continue-at - --output "$blob.incomplete" "$url"; do
      tries=$((tries + 1))
      if [ $tries -ge 5 ]; then echo "hf_download: $file: download failed" >&2; return 1; fi
      echo "hf_download: $file: interrupted, resuming" >&2
      sleep 1
    done
    if [[ "$etag" =~ ^[0-9a-f]{64}$ ]]; then
      local sum
      sum=$(sha256sum "$blob.incomplete" | cut -d' ' -f1)
      if [ "$sum" != "$etag" ]; then
        rm -f "$blob.incomplete"
        echo "hf_download: $file: sha256 mismatch (got $sum, expected $etag)" >&2
        return 1
      fi
    fi
    mv -f "$blob.incomplete" "$blob"
  fi
  mkdir -p "$repo_dir/snapshots/$commit"
  ln -sfn "../../blobs/$etag" "$repo_dir/snapshots/$commit/$file"
}

for f in "${required[@]}"; do fetch "$f" 1; done
for f in "${optional[@]}"; do fetch "$f" 0; done
snap="$repo_dir/snapshots/$commit"
if [ ! -e "$snap/tokenizer.json" ] && { [ ! -e "$snap/vocab.json" ] || [ ! -e "$snap/merges.txt" ]; }; then
  echo "hf_download: $model_id has neither tokenizer.json nor vocab.json + merges.txt" >&2
  exit 1
fi
printf '%s' "$commit" > "$repo_dir/refs/$revision"
echo "hf_download: $model_id ($revision = $commit) is in $snap" >&2
echo "$snap"
