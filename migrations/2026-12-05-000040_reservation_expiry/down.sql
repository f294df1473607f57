ALTER TABLE reservations DROP COLUMN expires_at;
