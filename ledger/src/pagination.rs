//! Lists a page at a time, in Stripe's shape: newest first, `limit` items,
//! from a cursor that is an item of the list (`starting_after`,
//! `ending_before`), and whether the list goes on (`has_more`).

use uuid::Uuid;

/// Where a page of a list starts: the newest items, the items just older
/// than an item of the list (`starting_after`), or just newer
/// (`ending_before`). An item's id is its cursor: ids are UUIDv7, so their
/// order is the items' creation order.
#[derive(Debug, Clone, Copy)]
pub enum Cursor {
    Newest,
    After(Uuid),
    Before(Uuid),
}

/// A page of a list, newest first, and whether the list goes on past it
/// in the direction it was read.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub has_more: bool,
}

/// The largest page a list gives.
pub const MAX_PAGE: i64 = 100;
