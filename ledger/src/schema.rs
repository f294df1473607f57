// The diesel schema of `migrations/`, in the form `diesel print-schema` writes.

diesel::table! {
    accounts (id) {
        id -> Uuid,
        tenant_id -> Uuid,
        reference -> Text,
        currency -> Text,
        allow_negative -> Bool,
        balance -> Numeric,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    account_slots (account_id, slot) {
        account_id -> Uuid,
        slot -> Int2,
        balance -> Numeric,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Uuid,
        tenant_id -> Uuid,
        key_hash -> Bytea,
        prefix -> Text,
        created_at -> Timestamptz,
        revoked_at -> Nullable<Timestamptz>,
        last_used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    balance_checkpoints (account_id, created_at, entry_id) {
        account_id -> Uuid,
        created_at -> Timestamptz,
        entry_id -> Int8,
        balance -> Numeric,
        entries -> Int8,
    }
}

diesel::table! {
    balance_settled (account_id) {
        account_id -> Uuid,
        created_at -> Timestamptz,
        entry_id -> Int8,
        balance -> Numeric,
        entries -> Int8,
    }
}

diesel::table! {
    card_charges (charge_id) {
        charge_id -> Uuid,
        payment_method -> Text,
        provider_key -> Text,
        provider_payment_id -> Nullable<Text>,
        decline_code -> Nullable<Text>,
        clearing_account_id -> Nullable<Uuid>,
        lease_until -> Nullable<Timestamptz>,
        completed_at -> Nullable<Timestamptz>,
        first_sent_at -> Nullable<Timestamptz>,
        next_action -> Nullable<Jsonb>,
        client_secret -> Nullable<Text>,
        sends -> Int4,
        authorize_secs -> Nullable<Float8>,
    }
}

diesel::table! {
    card_authorization_ends (charge_id) {
        charge_id -> Uuid,
        kind -> Text,
        lease_until -> Nullable<Timestamptz>,
        sends -> Int4,
        first_sent_at -> Nullable<Timestamptz>,
        completed_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    card_refunds (refund_id) {
        refund_id -> Uuid,
        provider_key -> Text,
        lease_until -> Nullable<Timestamptz>,
        first_sent_at -> Nullable<Timestamptz>,
        failure_code -> Nullable<Text>,
        completed_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    charge_authorizations (charge_id) {
        charge_id -> Uuid,
        amount -> Numeric,
        expires_at -> Timestamptz,
        hold_account_id -> Nullable<Uuid>,
        hold_transaction_id -> Nullable<Uuid>,
        release_transaction_id -> Nullable<Uuid>,
        capture_reference -> Nullable<Text>,
        captured_at -> Nullable<Timestamptz>,
        void_reference -> Nullable<Text>,
        void_reason -> Nullable<Text>,
        voided_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    charges (id) {
        id -> Uuid,
        tenant_id -> Uuid,
        order_id -> Text,
        attempt -> Int4,
        buyer_account_id -> Nullable<Uuid>,
        seller_account_id -> Uuid,
        platform_account_id -> Nullable<Uuid>,
        amount -> Numeric,
        fee -> Numeric,
        currency -> Text,
        refunded_amount -> Numeric,
        refunded_fee -> Numeric,
        transaction_id -> Nullable<Uuid>,
        created_at -> Timestamptz,
        receipt_email -> Nullable<Text>,
        status -> Text,
    }
}

diesel::table! {
    email_sends (id) {
        id -> Int8,
        tenant_id -> Uuid,
        order_id -> Text,
        sender -> Text,
        attempt -> Uuid,
        attempted_at -> Timestamptz,
    }
}

diesel::table! {
    emails (tenant_id, order_id) {
        tenant_id -> Uuid,
        order_id -> Text,
        charge_id -> Uuid,
        recipient -> Text,
        status -> Text,
        claimed_at -> Timestamptz,
        sent_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    history_horizon (only_row) {
        only_row -> Bool,
        settled_to -> Timestamptz,
    }
}

diesel::table! {
    idempotency_keys (tenant_id, key) {
        tenant_id -> Uuid,
        key -> Text,
        fingerprint -> Bytea,
        status_code -> Nullable<Int2>,
        content_type -> Nullable<Text>,
        response_headers -> Jsonb,
        response_body -> Nullable<Bytea>,
        created_at -> Timestamptz,
        charge_id -> Nullable<Uuid>,
        refund_id -> Nullable<Uuid>,
        capture_of -> Nullable<Uuid>,
        void_of -> Nullable<Uuid>,
    }
}

diesel::table! {
    inbox (consumer, message_id) {
        consumer -> Text,
        message_id -> Uuid,
        received_at -> Timestamptz,
    }
}

diesel::table! {
    ledger_entries (id) {
        id -> Int8,
        transaction_id -> Uuid,
        leg -> Int2,
        account_id -> Uuid,
        amount -> Numeric,
        currency -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    ledger_transactions (id) {
        id -> Uuid,
        tenant_id -> Uuid,
        kind -> Text,
        currency -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    outbox (id) {
        id -> Int8,
        message_id -> Uuid,
        tenant_id -> Uuid,
        event_type -> Text,
        order_id -> Nullable<Text>,
        payload -> Jsonb,
        created_at -> Timestamptz,
        published_at -> Nullable<Timestamptz>,
        first_published_at -> Nullable<Timestamptz>,
        publish_attempts -> Int4,
        retry_at -> Nullable<Timestamptz>,
        last_error -> Nullable<Text>,
        request_id -> Nullable<Text>,
    }
}

diesel::table! {
    provider_flags (id) {
        id -> Int8,
        tenant_id -> Nullable<Uuid>,
        charge_id -> Nullable<Uuid>,
        event_id -> Nullable<Text>,
        kind -> Text,
        detail -> Jsonb,
        created_at -> Timestamptz,
        resolved_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    refunds (id) {
        id -> Uuid,
        tenant_id -> Uuid,
        charge_id -> Uuid,
        amount -> Numeric,
        fee_amount -> Numeric,
        currency -> Text,
        transaction_id -> Uuid,
        created_at -> Timestamptz,
        reference -> Text,
        whole_remainder -> Bool,
        provider_refund_id -> Nullable<Text>,
        status -> Text,
        reversal_transaction_id -> Nullable<Uuid>,
    }
}

diesel::table! {
    reservations (id) {
        id -> Uuid,
        tenant_id -> Uuid,
        order_id -> Text,
        sku -> Text,
        quantity -> Int8,
        status -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        expires_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    skus (tenant_id, sku) {
        tenant_id -> Uuid,
        sku -> Text,
        on_hand -> Int8,
        reserved -> Int8,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    stock_entries (id) {
        id -> Int8,
        tenant_id -> Uuid,
        sku -> Text,
        kind -> Text,
        quantity -> Int8,
        order_id -> Nullable<Text>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    tenants (id) {
        id -> Uuid,
        name -> Text,
        created_at -> Timestamptz,
        rate_limit_per_sec -> Nullable<Int4>,
        rate_limit_burst -> Nullable<Int4>,
    }
}

diesel::table! {
    transfers (id) {
        id -> Uuid,
        tenant_id -> Uuid,
        source_account_id -> Uuid,
        destination_account_id -> Uuid,
        amount -> Numeric,
        currency -> Text,
        description -> Nullable<Text>,
        transaction_id -> Uuid,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    webhook_attempts (id) {
        id -> Int8,
        delivery_id -> Int8,
        endpoint_id -> Uuid,
        attempted_at -> Timestamptz,
        status_code -> Nullable<Int4>,
        latency_ms -> Int4,
        response_excerpt -> Nullable<Text>,
        error -> Nullable<Text>,
    }
}

diesel::table! {
    webhook_deliveries (id) {
        id -> Int8,
        tenant_id -> Uuid,
        endpoint_id -> Uuid,
        message_id -> Uuid,
        event_type -> Text,
        payload -> Bytea,
        attempts -> Int4,
        next_attempt_at -> Timestamptz,
        delivered_at -> Nullable<Timestamptz>,
        failed_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    webhook_endpoints (id) {
        id -> Uuid,
        tenant_id -> Uuid,
        url -> Text,
        description -> Nullable<Text>,
        enabled_events -> Array<Text>,
        enabled -> Bool,
        secret -> Text,
        previous_secret -> Nullable<Text>,
        previous_secret_expires_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        deleted_at -> Nullable<Timestamptz>,
        failing_since -> Nullable<Timestamptz>,
        disabled_reason -> Nullable<Text>,
    }
}

diesel::joinable!(account_slots -> accounts (account_id));
diesel::joinable!(balance_checkpoints -> accounts (account_id));
diesel::joinable!(balance_settled -> accounts (account_id));
diesel::joinable!(accounts -> tenants (tenant_id));
diesel::joinable!(api_keys -> tenants (tenant_id));
diesel::joinable!(card_authorization_ends -> charges (charge_id));
diesel::joinable!(card_charges -> accounts (clearing_account_id));
diesel::joinable!(card_charges -> charges (charge_id));
diesel::joinable!(charge_authorizations -> accounts (hold_account_id));
diesel::joinable!(charge_authorizations -> charges (charge_id));
diesel::joinable!(charges -> accounts (buyer_account_id));
diesel::joinable!(charges -> ledger_transactions (transaction_id));
diesel::joinable!(emails -> charges (charge_id));
diesel::joinable!(emails -> tenants (tenant_id));
diesel::joinable!(idempotency_keys -> charges (charge_id));
diesel::joinable!(card_refunds -> refunds (refund_id));
diesel::joinable!(idempotency_keys -> refunds (refund_id));
diesel::joinable!(provider_flags -> charges (charge_id));
diesel::joinable!(provider_flags -> tenants (tenant_id));
diesel::joinable!(refunds -> charges (charge_id));
diesel::joinable!(refunds -> tenants (tenant_id));
diesel::joinable!(transfers -> ledger_transactions (transaction_id));
diesel::joinable!(transfers -> tenants (tenant_id));
diesel::joinable!(webhook_attempts -> webhook_deliveries (delivery_id));
diesel::joinable!(webhook_attempts -> webhook_endpoints (endpoint_id));
diesel::joinable!(webhook_deliveries -> tenants (tenant_id));
diesel::joinable!(webhook_deliveries -> webhook_endpoints (endpoint_id));
diesel::joinable!(webhook_endpoints -> tenants (tenant_id));

diesel::allow_tables_to_appear_in_same_query!(
    account_slots,
    accounts,
    api_keys,
    balance_checkpoints,
    balance_settled,
    card_authorization_ends,
    card_charges,
    card_refunds,
    charge_authorizations,
    charges,
    email_sends,
    emails,
    history_horizon,
    idempotency_keys,
    inbox,
    ledger_entries,
    ledger_transactions,
    outbox,
    provider_flags,
    refunds,
    reservations,
    skus,
    stock_entries,
    tenants,
    transfers,
    webhook_attempts,
    webhook_deliveries,
    webhook_endpoints,
);
