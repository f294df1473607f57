-- Replaced by `refunds_charge_id_id` (the previous migration).
DROP INDEX CONCURRENTLY IF EXISTS refunds_charge_idx;
