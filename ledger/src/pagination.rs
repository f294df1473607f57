//! Lists a page at a time, in Stripe's shape: newest first, `limit` items,
//! from a cursor that is an item of the list (`starting_after`,
//! `ending_before`), and whether the list goes on (`has_more`).

use uuid::Uuid;

/// Where a page of a list starts: the newest items, the items just older
/// than an item of the list (`starting_after`), or just newer
/// (`ending_before`). An item's id is its cursor: ids are UUIDv7, so their
/// order is the items' creation order. (The event feed's cursor is an
/// event's message id, standing for its outbox row's sequence number, which
/// is the feed's order: `feed`.)
#[derive(Debug, Clone, Copy)]
pub enum Cursor {
    Newest,
    After(Uuid),
    Before(Uuid),
}

impl Cursor {
    /// The item the page is read from, if any.
    pub fn item(self) -> Option<Uuid> {
        match self {
            Cursor::Newest => None,
            Cursor::After(id) | Cursor::Before(id) => Some(id),
        }
    }

    /// How a page's SQL reads from the cursor: the comparison of an id with
    /// the cursor's, and the order of ids. Older items are read newest
    /// first; newer ones (`Before`) oldest first, the nearest to the cursor
    /// first, and [`Page::read`] turns them back.
    pub fn sql(self) -> (&'static str, &'static str) {
        match self {
            Cursor::Newest | Cursor::After(_) => ("<", "DESC"),
            Cursor::Before(_) => (">", "ASC"),
        }
    }
}

/// A page of a list, newest first, and whether the list goes on past it
/// in the direction it was read.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub has_more: bool,
}

impl<T> Page<T> {
    /// The page of up to `limit + 1` items read in [`Cursor::sql`]'s order:
    /// the first `limit`, newest first, and whether there was one more.
    pub fn read(mut items: Vec<T>, limit: i64, cursor: Cursor) -> Page<T> {
        let has_more = items.len() as i64 > limit;
        items.truncate(limit as usize);
        if matches!(cursor, Cursor::Before(_)) {
            items.reverse();
        }
        Page { data: items, has_more }
    }
}

/// The largest page a list gives.
pub const MAX_PAGE: i64 = 100;
