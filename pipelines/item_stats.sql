-- Pipeline shelf-item-stats: events -> per-item counts and weight (UDF event_weight) over
-- sliding one-hour windows, every five minutes (HOP) -> shelf-item-stats, which shelf keeps
-- as each item's recent activity (`GET /v1/items/{id}`, field `window_stats`).
-- ${FLUVIO_ENDPOINT} is filled in by `shelf deploy`.

CREATE TABLE events (
    user_id TEXT,
    kind TEXT NOT NULL,
    item_id TEXT,
    ts TIMESTAMP NOT NULL
) WITH (
    connector = 'fluvio',
    endpoint = '${FLUVIO_ENDPOINT}',
    topic = 'shelf-events',
    type = 'source',
    'source.offset' = 'earliest',
    format = 'json',
    bad_data = 'drop',
    event_time_field = 'ts'
);

CREATE TABLE item_stats WITH (
    connector = 'fluvio',
    endpoint = '${FLUVIO_ENDPOINT}',
    topic = 'shelf-item-stats',
    type = 'sink',
    format = 'json'
);

INSERT INTO item_stats
SELECT
    item_id,
    window,
    sum(CASE WHEN kind = 'view' THEN 1 ELSE 0 END) AS views,
    sum(CASE WHEN kind = 'click' THEN 1 ELSE 0 END) AS clicks,
    sum(CASE WHEN kind = 'add_to_cart' THEN 1 ELSE 0 END) AS carts,
    sum(CASE WHEN kind = 'purchase' THEN 1 ELSE 0 END) AS purchases,
    sum(event_weight(kind)) AS weight
FROM (
    SELECT
        item_id,
        kind,
        hop(INTERVAL '5' MINUTE, INTERVAL '1' HOUR) AS window
    FROM events
    WHERE item_id IS NOT NULL
        AND kind IN ('view', 'click', 'add_to_cart', 'purchase')
)
GROUP BY item_id, window;
