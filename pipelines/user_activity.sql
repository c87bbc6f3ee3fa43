-- Pipeline shelf-user-activity: events -> per-user activity summaries over tumbling
-- one-hour windows -> shelf-user-activity, for dashboards and audience jobs (shelf itself
-- builds profiles from shelf-events).
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

CREATE TABLE user_activity WITH (
    connector = 'fluvio',
    endpoint = '${FLUVIO_ENDPOINT}',
    topic = 'shelf-user-activity',
    type = 'sink',
    format = 'json'
);

INSERT INTO user_activity
SELECT
    user_id,
    tumble(INTERVAL '1' HOUR) AS window,
    count(*) AS events,
    count(DISTINCT item_id) AS distinct_items,
    sum(CASE WHEN kind = 'search' THEN 1 ELSE 0 END) AS searches,
    sum(CASE WHEN kind = 'purchase' THEN 1 ELSE 0 END) AS purchases,
    sum(event_weight(kind)) AS weight
FROM events
WHERE user_id IS NOT NULL
    AND kind IN ('view', 'click', 'add_to_cart', 'purchase', 'search')
GROUP BY 1, 2;
