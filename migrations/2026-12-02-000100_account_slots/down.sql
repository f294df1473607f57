-- Fold every slot back into its account row before the slots go.
UPDATE accounts a SET balance = a.balance + s.total
  FROM (SELECT account_id, sum(balance) AS total FROM account_slots GROUP BY account_id) s
 WHERE a.id = s.account_id;
COMMENT ON COLUMN accounts.balance IS NULL;
DROP TABLE account_slots;
