-- The id of the HTTP request that wrote the event (its `X-Request-Id`, or
-- the one the API made up): the relay sends it as the message's
-- `correlation_id` and in a W3C `traceparent`, and the workers log it on
-- every line about the message. NULL for events no request wrote.
ALTER TABLE outbox ADD COLUMN request_id text;
