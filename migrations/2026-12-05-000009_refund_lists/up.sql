-- A charge's refunds, newest first (`GET /v1/charges/{id}/refunds`). A
-- charge id names one tenant's charge, so the charge leads. It replaces
-- `refunds_charge_idx (charge_id)` (the next migration drops it).
CREATE INDEX CONCURRENTLY IF NOT EXISTS refunds_charge_id_id ON refunds (charge_id, id DESC);
