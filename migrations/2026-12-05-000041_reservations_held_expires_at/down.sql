DROP INDEX CONCURRENTLY IF EXISTS reservations_held_expires_at;
