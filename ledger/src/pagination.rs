//! Lists a page at a time, in Stripe's shape: newest first, `limit` items,
//! from a cursor that is an item of the list (`starting_after`,
//! `ending_before`), and whether the list goes on (`has_more`).

use tokio_postgres::types::ToSql;
use uuid::Uuid;

/// Where a page of a list starts: the newest items, the items just older
/// than an item of the list (`starting_after`), or just newer
/// (`ending_before`). An item's id is its cursor: ids are UUIDv7, so their
/// order is the items' creation order. (The event feed's cursor is an
/// event's message id, standing for its outbox row's sequence number, which
/// is the feed's order: `feed`. An account's entries are read from an
/// entry's id, standing for its place in the account's order:
/// `accounts::entries`.)
#[derive(Debug, Clone, Copy)]
pub enum Cursor<Id = Uuid> {
    Newest,
    After(Id),
    Before(Id),
}

impl<Id: Copy> Cursor<Id> {
    /// The item the page is read from, if any.
    pub fn item(self) -> Option<Id> {
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
    pub fn read<Id>(mut items: Vec<T>, limit: i64, cursor: Cursor<Id>) -> Page<T> {
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

/// The WHERE clause of a list's statement, from the filters a request
/// gives: each combination of filters is a statement text of its own.
///
/// The pool's sessions plan every statement once, generically
/// (`plan_cache_mode = force_generic_plan`, [`crate::db`]). A generic plan
/// of one statement for all combinations (`($2::text IS NULL OR col = $2)`)
/// does not know which filters are given, so it cannot read a filter's
/// index and walks the tenant's whole `(tenant_id, id)` range instead. With
/// only the given filters in its text, a statement's generic plan knows its
/// predicates and reads the page from the filter's index, and from the
/// cursor on.
///
/// The caller writes each clause's SQL; this only numbers the parameters
/// and joins the clauses with `AND`.
#[derive(Default)]
pub struct Filters<'a> {
    clauses: Vec<String>,
    params: Vec<Box<dyn ToSql + Send + Sync + 'a>>,
}

impl<'a> Filters<'a> {
    pub fn new() -> Filters<'a> {
        Filters::default()
    }

    /// Binds `value` as the statement's next parameter and returns its
    /// placeholder (`$3`), for SQL outside the clauses (a `LIMIT`) or a
    /// clause of another shape ([`Filters::push`]).
    pub fn bind(&mut self, value: impl ToSql + Send + Sync + 'a) -> String {
        self.params.push(Box::new(value));
        format!("${}", self.params.len())
    }

    /// Appends a clause whose parameters are already bound.
    pub fn push(&mut self, clause: String) -> &mut Self {
        self.clauses.push(clause);
        self
    }

    /// Appends `{lhs} $n` (`lhs` as `"c.order_id ="`), `value` as `$n`.
    pub fn and(&mut self, lhs: &str, value: impl ToSql + Send + Sync + 'a) -> &mut Self {
        let p = self.bind(value);
        self.push(format!("{lhs} {p}"))
    }

    /// [`Filters::and`] when the filter is given; nothing otherwise.
    pub fn and_some(&mut self, lhs: &str, value: Option<impl ToSql + Send + Sync + 'a>) -> &mut Self {
        match value {
            Some(value) => self.and(lhs, value),
            None => self,
        }
    }

    /// The cursor's clause, when the page is read from an item: `{id} < $n`
    /// (older) or `{id} > $n` (newer), `bound` being the cursor's value of
    /// `id` ([`Cursor::sql`]).
    pub fn cursor<Id: Copy>(
        &mut self,
        id: &str,
        cursor: Cursor<Id>,
        bound: Option<impl ToSql + Send + Sync + 'a>,
    ) -> &mut Self {
        let (op, _) = cursor.sql();
        self.and_some(&format!("{id} {op}"), bound)
    }

    /// The clauses joined with `AND` (`TRUE` when there are none).
    pub fn sql(&self) -> String {
        if self.clauses.is_empty() {
            "TRUE".to_owned()
        } else {
            self.clauses.join(" AND ")
        }
    }

    /// The parameters, in their placeholders' order.
    pub fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect()
    }
}
