DROP TABLE balance_settled;
