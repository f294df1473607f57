DROP TABLE history_horizon;
DROP TABLE balance_checkpoints;
