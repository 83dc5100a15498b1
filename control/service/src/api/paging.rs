//! Paging of the list operations, as Lambda's: at most 50 items a page whatever
//! `MaxItems` asks, and a `NextMarker` while more remain.
//!
//! The marker is opaque to clients: the base64url of the last item's key on the previous
//! page (each list picks its own key), so a page starts exactly after that item even when
//! items were added or removed in between.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::api::error::ApiError;

/// Most items in one page.
const MAX_PAGE: i64 = 50;

/// Largest `MaxItems` accepted (Lambda's model).
const MAX_ITEMS: i64 = 10_000;

/// Where a page starts and how long it is.
#[derive(Debug)]
pub struct Page<K> {
    /// The key of the item the page starts after; `None` from the start.
    pub after: Option<K>,
    pub size: i64,
}

impl<K> Page<K> {
    /// Reads `Marker` and `MaxItems`; `key` parses the key inside a marker (`None` if
    /// the marker is not one this list gave out).
    pub fn parse(
        marker: Option<&str>,
        max_items: Option<&str>,
        key: impl FnOnce(&str) -> Option<K>,
    ) -> Result<Page<K>, ApiError> {
        let size = match max_items {
            None => MAX_PAGE,
            Some(text) => match text.parse::<i64>() {
                Ok(n) if (1..=MAX_ITEMS).contains(&n) => n.min(MAX_PAGE),
                _ => {
                    return Err(ApiError::invalid_parameter(format!(
                        "1 validation error detected: Value '{text}' at 'maxItems' failed to \
                         satisfy constraint: Member must have value between 1 and {MAX_ITEMS}"
                    )))
                }
            },
        };
        let after = match marker {
            None => None,
            Some(marker) => {
                let decoded = URL_SAFE_NO_PAD
                    .decode(marker)
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .ok_or_else(invalid_marker)?;
                Some(key(&decoded).ok_or_else(invalid_marker)?)
            }
        };
        Ok(Page { after, size })
    }

    /// How many items to fetch: one more than the page, to know whether another follows.
    pub fn limit(&self) -> i64 {
        self.size + 1
    }

    /// Cuts `found` (fetched with [`Page::limit`]) to the page, with the marker of the
    /// next page when there is one.
    pub fn split<T>(
        &self,
        mut found: Vec<T>,
        key: impl FnOnce(&T) -> String,
    ) -> (Vec<T>, Option<String>) {
        let size = usize::try_from(self.size).unwrap_or(usize::MAX);
        if found.len() <= size {
            return (found, None);
        }
        found.truncate(size);
        let marker = found.last().map(|last| URL_SAFE_NO_PAD.encode(key(last)));
        (found, marker)
    }
}

/// The error for a marker this list did not give out.
pub fn invalid_marker() -> ApiError {
    ApiError::invalid_parameter("Invalid Marker: use the NextMarker of a previous page")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(marker: Option<&str>, max_items: Option<&str>) -> Result<Page<String>, ApiError> {
        Page::parse(marker, max_items, |key| {
            (!key.is_empty()).then(|| key.to_owned())
        })
    }

    #[test]
    fn pages_are_capped_at_fifty() {
        assert_eq!(page(None, None).unwrap().size, 50);
        assert_eq!(page(None, Some("3")).unwrap().size, 3);
        assert_eq!(page(None, Some("10000")).unwrap().size, 50);
        for bad in ["0", "10001", "-1", "x"] {
            assert!(page(None, Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn markers_round_trip_and_reject_garbage() {
        let first = page(None, Some("2")).unwrap();
        let items = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let (items, marker) = first.split(items, Clone::clone);
        assert_eq!(items, ["a", "b"]);
        let next = page(marker.as_deref(), Some("2")).unwrap();
        assert_eq!(next.after.as_deref(), Some("b"));
        let (_, none) = next.split(vec!["c".to_owned()], Clone::clone);
        assert_eq!(none, None);
        for bad in ["", "!!!", "/w"] {
            assert_eq!(
                page(Some(bad), None).unwrap_err().kind,
                "InvalidParameterValueException",
                "{bad}"
            );
        }
    }
}
