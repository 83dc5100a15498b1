//! A reactor function using serde: `{"items":[{"name":..,"price":..,"qty":..},...]}` in,
//! `{"count":N,"total":sum(price*qty),"names":[sorted upper-cased names]}` out.

use serde::{Deserialize, Serialize};
use std::convert::Infallible;

// Invalid input is logged ("json-transform: invalid event: …") and ends the invocation with
// exit code 1 (a function error).
ember_function::reactor!(ember_function::json(summarize));

#[derive(Deserialize)]
struct Event {
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    name: String,
    price: f64,
    qty: f64,
}

#[derive(Serialize)]
struct Summary {
    count: usize,
    total: f64,
    names: Vec<String>,
}

fn summarize(event: Event) -> Result<Summary, Infallible> {
    // Not `.sum()`: f64's `Sum` starts from -0.0, which would make an empty list total -0.0.
    let total = event
        .items
        .iter()
        .fold(0.0, |total, i| total + i.price * i.qty);
    let mut names: Vec<String> = event.items.iter().map(|i| i.name.to_uppercase()).collect();
    names.sort();
    Ok(Summary {
        count: event.items.len(),
        total,
        names,
    })
}
