//! Rebuilds the crate when a migration is added: `sqlx::migrate!` embeds
//! `migrations/` at compile time but cannot tell Cargo to watch the folder itself.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
