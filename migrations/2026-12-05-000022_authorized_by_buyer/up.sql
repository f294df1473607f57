-- What is held for an account (its `pending`): the open authorizations of
-- its buyer, read from this index alone, however many charges the buyer
-- has had. Built CONCURRENTLY, so a large table keeps taking charges.
CREATE INDEX CONCURRENTLY IF NOT EXISTS charges_authorized_buyer
    ON charges (buyer_account_id) WHERE status = 'authorized';
