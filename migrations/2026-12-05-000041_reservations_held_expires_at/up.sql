-- The expirer's scan of held reservations, soonest deadline first. Built
-- CONCURRENTLY, so a large table keeps taking reservations.
CREATE INDEX CONCURRENTLY IF NOT EXISTS reservations_held_expires_at
    ON reservations (expires_at) WHERE status = 'held';
