DROP TRIGGER tenants_id_fixed ON tenants;
DROP TRIGGER tenants_no_truncate ON tenants;
DROP TRIGGER tenants_no_delete ON tenants;
DROP FUNCTION tenants_keep_identity();

DROP TRIGGER idempotency_keys_tenant_fixed ON idempotency_keys;
DROP TRIGGER outbox_tenant_fixed ON outbox;
DROP TRIGGER charges_references_fixed ON charges;
DROP FUNCTION references_fixed();

ALTER TABLE idempotency_keys
    ADD CONSTRAINT idempotency_keys_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id);
ALTER TABLE outbox
    ADD CONSTRAINT outbox_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id);
ALTER TABLE ledger_transactions
    ADD CONSTRAINT ledger_transactions_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id);
ALTER TABLE charges
    ADD CONSTRAINT charges_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id),
    ADD CONSTRAINT charges_seller_account_id_fkey FOREIGN KEY (seller_account_id) REFERENCES accounts (id),
    ADD CONSTRAINT charges_platform_account_id_fkey FOREIGN KEY (platform_account_id) REFERENCES accounts (id);

DROP TRIGGER idempotency_keys_tenant_checked ON idempotency_keys;
DROP TRIGGER outbox_tenant_checked ON outbox;
DROP TRIGGER ledger_transactions_tenant_checked ON ledger_transactions;
DROP TRIGGER charges_accounts_checked ON charges;
DROP TRIGGER charges_tenant_checked ON charges;
DROP FUNCTION charges_check_accounts();
DROP FUNCTION check_tenants_exist();
