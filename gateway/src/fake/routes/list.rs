//! What every list endpoint shares, as Stripe has it: a creation period
//! (`created`, `created[gte|gt|lte|lt]`), a page size (`limit`, 1 to 100,
//! default 10) and one cursor (`starting_after` or `ending_before`), over
//! objects newest first; the answer `{"object": "list", "data", "has_more",
//! "url"}`.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::objects::{Payment, RefundRecord};
use crate::routes::Failure;

/// Stripe's largest page.
pub const MAX_PAGE: usize = 100;
const DEFAULT_PAGE: usize = 10;

/// An object a list holds.
pub trait Listed {
    fn id(&self) -> &str;
    /// Unix seconds.
    fn created(&self) -> i64;
    fn json(&self) -> Value;
}

impl Listed for Payment {
    fn id(&self) -> &str {
        &self.id
    }
    fn created(&self) -> i64 {
        self.created
    }
    fn json(&self) -> Value {
        Payment::json(self)
    }
}

impl Listed for RefundRecord {
    fn id(&self) -> &str {
        &self.refund.id
    }
    fn created(&self) -> i64 {
        self.refund.created
    }
    fn json(&self) -> Value {
        RefundRecord::json(self)
    }
}

enum Cursor {
    /// The page of older objects that follows this one.
    After(String),
    /// The page of newer objects that comes before this one.
    Before(String),
}

/// The paging parameters of one list request.
pub struct Page {
    /// Unix seconds, inclusive.
    from: i64,
    /// Unix seconds, exclusive.
    until: i64,
    limit: usize,
    cursor: Option<Cursor>,
}

impl Page {
    /// Reads the paging parameters and the endpoint's own `filters`; any
    /// other parameter is refused, as Stripe refuses it.
    pub fn parse<'q>(
        query: &'q [(String, String)],
        filters: &[&str],
    ) -> Result<(Page, HashMap<&'q str, &'q str>), Failure> {
        let mut page = Page { from: i64::MIN, until: i64::MAX, limit: DEFAULT_PAGE, cursor: None };
        let mut found = HashMap::new();
        let (mut after, mut before) = (None, None);
        for (name, value) in query {
            let int = || {
                value.parse::<i64>().map_err(|_| {
                    Failure::invalid(Some("parameter_invalid_integer"), format!("Invalid integer: {value}"), Some(name))
                })
            };
            match name.as_str() {
                "created" => (page.from, page.until) = (int()?, int()?.saturating_add(1)),
                "created[gte]" => page.from = page.from.max(int()?),
                "created[gt]" => page.from = page.from.max(int()?.saturating_add(1)),
                "created[lt]" => page.until = page.until.min(int()?),
                "created[lte]" => page.until = page.until.min(int()?.saturating_add(1)),
                "limit" => page.limit = limit(value)?,
                "starting_after" => after = Some(value.clone()),
                "ending_before" => before = Some(value.clone()),
                n if filters.contains(&n) => {
                    found.insert(n, value.as_str());
                }
                n => {
                    let message = format!("Received unknown parameter: {n}");
                    return Err(Failure::invalid(Some("parameter_unknown"), message, Some(n)));
                }
            }
        }
        page.cursor = match (after, before) {
            (None, None) => None,
            (Some(id), None) => Some(Cursor::After(id)),
            (None, Some(id)) => Some(Cursor::Before(id)),
            (Some(_), Some(_)) => {
                let message = "You may only specify one of these parameters: ending_before, starting_after.";
                return Err(Failure::invalid(None, message, Some("ending_before")));
            }
        };
        Ok((page, found))
    }

    /// A cursor must name an object the list holds.
    pub fn check_cursor(&self, object: &str, exists: impl Fn(&str) -> bool) -> Result<(), Failure> {
        let (id, param) = match &self.cursor {
            None => return Ok(()),
            Some(Cursor::After(id)) => (id, "starting_after"),
            Some(Cursor::Before(id)) => (id, "ending_before"),
        };
        if exists(id) {
            Ok(())
        } else {
            Err(Failure::no_such(object, id, param))
        }
    }

    /// The page of `newest_first` (every object of the list) that these
    /// parameters and `keep` select. The cursor is a place in the whole list,
    /// so it need not match the filters itself.
    pub fn answer<'a, T: Listed + 'a>(
        &self,
        url: &str,
        newest_first: impl Iterator<Item = &'a T>,
        keep: impl Fn(&T) -> bool,
    ) -> Value {
        let selected = |object: &&T| (self.from..self.until).contains(&object.created()) && keep(object);
        let (data, has_more): (Vec<&T>, bool) = match &self.cursor {
            Some(Cursor::Before(id)) => {
                // The `limit` objects just newer than the cursor, still newest
                // first; more when any newer ones are left.
                let newer: Vec<&T> = newest_first.take_while(|o| o.id() != id).filter(selected).collect();
                let start = newer.len().saturating_sub(self.limit);
                (newer[start..].to_vec(), start > 0)
            }
            cursor => {
                let mut older = newest_first;
                if let Some(Cursor::After(id)) = cursor {
                    // Up to and including the cursor.
                    older.by_ref().take_while(|o| o.id() != id).for_each(drop);
                }
                let mut data: Vec<&T> = older.filter(selected).take(self.limit + 1).collect();
                let has_more = data.len() > self.limit;
                data.truncate(self.limit);
                (data, has_more)
            }
        };
        let data: Vec<Value> = data.into_iter().map(Listed::json).collect();
        json!({"object": "list", "url": url, "has_more": has_more, "data": data})
    }
}

/// `limit`: 1 to 100.
pub fn limit(value: &str) -> Result<usize, Failure> {
    value
        .parse::<usize>()
        .ok()
        .filter(|l| (1..=MAX_PAGE).contains(l))
        .ok_or_else(|| Failure::invalid(None, "Invalid limit: must be an integer between 1 and 100.", Some("limit")))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Item(String, i64);

    impl Listed for Item {
        fn id(&self) -> &str {
            &self.0
        }
        fn created(&self) -> i64 {
            self.1
        }
        fn json(&self) -> Value {
            json!(self.0)
        }
    }

    /// `o9` (created at 9) down to `o0`.
    fn items() -> Vec<Item> {
        (0..10).rev().map(|n| Item(format!("o{n}"), n)).collect()
    }

    fn page(query: &[(&str, &str)], keep: impl Fn(&Item) -> bool) -> (Vec<String>, bool) {
        let query: Vec<(String, String)> = query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let (page, _) = Page::parse(&query, &[]).unwrap();
        let items = items();
        let answer = page.answer("/v1/items", items.iter(), keep);
        let ids = answer["data"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
        (ids, answer["has_more"].as_bool().unwrap())
    }

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn pages_go_both_ways_from_a_cursor() {
        let all = |_: &Item| true;
        assert_eq!(page(&[("limit", "3")], all), (ids(&["o9", "o8", "o7"]), true));
        assert_eq!(page(&[("limit", "3"), ("starting_after", "o7")], all), (ids(&["o6", "o5", "o4"]), true));
        assert_eq!(page(&[("limit", "3"), ("starting_after", "o3")], all), (ids(&["o2", "o1", "o0"]), false));
        assert_eq!(page(&[("limit", "3"), ("ending_before", "o3")], all), (ids(&["o6", "o5", "o4"]), true));
        assert_eq!(page(&[("limit", "3"), ("ending_before", "o6")], all), (ids(&["o9", "o8", "o7"]), false));
        assert_eq!(page(&[("ending_before", "o9")], all), (ids(&[]), false));
        assert_eq!(page(&[("starting_after", "o0")], all), (ids(&[]), false));
    }

    #[test]
    fn periods_and_filters_apply_around_a_cursor_outside_them() {
        let even = |i: &Item| i.1 % 2 == 0;
        assert_eq!(page(&[("starting_after", "o7")], even), (ids(&["o6", "o4", "o2", "o0"]), false));
        assert_eq!(page(&[("ending_before", "o3"), ("limit", "1")], even), (ids(&["o4"]), true));
        let period = [("created[gte]", "3"), ("created[lt]", "6")];
        assert_eq!(page(&period, |_| true), (ids(&["o5", "o4", "o3"]), false));
        let period = [("created[gt]", "3"), ("created[lte]", "6"), ("limit", "2")];
        assert_eq!(page(&period, |_| true), (ids(&["o6", "o5"]), true));
        assert_eq!(page(&[("created", "4")], |_| true), (ids(&["o4"]), false));
    }

    #[test]
    fn bad_parameters_are_refused() {
        let refused = |query: &[(&str, &str)]| {
            let query: Vec<(String, String)> = query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            Page::parse(&query, &["charge"]).err().map(|f| f.body["error"]["param"].clone())
        };
        assert_eq!(refused(&[("limit", "0")]), Some(json!("limit")));
        assert_eq!(refused(&[("limit", "101")]), Some(json!("limit")));
        assert_eq!(refused(&[("created[gte]", "soon")]), Some(json!("created[gte]")));
        assert_eq!(refused(&[("customer", "cus_1")]), Some(json!("customer")));
        assert_eq!(refused(&[("starting_after", "a"), ("ending_before", "b")]), Some(json!("ending_before")));
        assert_eq!(refused(&[("charge", "ch_1"), ("limit", "100")]), None);
    }
}
