-- Pipeline shelf-covisits: events -> each user's co-visitation pairs per session (events
-- less than 30 minutes apart) -> shelf-covisit-pairs, for users on the distributed path who
-- keep item-to-item co-visitation outside shelf (a feature store, a batch recommender).
-- The pairs and weights are those of shelf's event job (the covisit_pairs UDF is held to
-- the engine's cases by a parity test); shelf itself keeps its co-visit lists from
-- shelf-events, and pairs events of one user across sessions too (up to 24 h apart).
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

CREATE TABLE covisit_pairs WITH (
    connector = 'fluvio',
    endpoint = '${FLUVIO_ENDPOINT}',
    topic = 'shelf-covisit-pairs',
    type = 'sink',
    format = 'json'
);

INSERT INTO covisit_pairs
SELECT
    user_id,
    session(INTERVAL '30' MINUTE) AS window,
    covisit_pairs(string_agg(
        concat_ws(chr(9), item_id, kind, CAST(CAST(extract(epoch FROM ts) * 1000 AS BIGINT) AS TEXT)),
        chr(10)
    )) AS pairs
FROM events
WHERE user_id IS NOT NULL
    AND item_id IS NOT NULL
    AND kind IN ('view', 'click', 'add_to_cart', 'purchase')
GROUP BY 1, 2;
