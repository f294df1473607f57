-- Stock held for a checkout that is never paid comes back: a reservation
-- holds until `expires_at` (7 days by default, as an authorization), and
-- the expirer releases what passed it unless a charge of its order paid it
-- or may still (succeeded, processing, authorized). Reservations made
-- before this column hold until released, as they did.
ALTER TABLE reservations ADD COLUMN expires_at timestamptz;
