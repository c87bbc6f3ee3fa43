-- Pipeline shelf-item-vectors: items -> item text (UDF item_text) -> embedding (UDF embed)
-- -> shelf-item-vectors. Each output record carries the item record unchanged (JSON text,
-- so no field is lost) and, for upserts, the embedding as JSON text with its model id and
-- dimension; shelf checks both before indexing the vector (`--item-topic
-- shelf-item-vectors`). Deletes pass through with a NULL embedding.
-- ${FLUVIO_ENDPOINT} is filled in by `shelf deploy`.

CREATE TABLE items (
    value TEXT
) WITH (
    connector = 'fluvio',
    endpoint = '${FLUVIO_ENDPOINT}',
    topic = 'shelf-items',
    type = 'source',
    'source.offset' = 'earliest',
    format = 'json',
    'json.unstructured' = 'true'
);

CREATE TABLE item_vectors WITH (
    connector = 'fluvio',
    endpoint = '${FLUVIO_ENDPOINT}',
    topic = 'shelf-item-vectors',
    type = 'sink',
    format = 'json'
);

INSERT INTO item_vectors
SELECT
    value AS item,
    CASE WHEN extract_json_string(value, '$.op') = 'upsert' THEN
        embed(item_text(
            extract_json_string(value, '$.title'),
            extract_json_string(value, '$.brand'),
            extract_json_string(value, '$.category'),
            extract_json_string(value, '$.description')
        ))
    END AS embedding
FROM items;
