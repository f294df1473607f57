// `embed_migrations!` reads migrations/ at compile time; without this, adding
// a migration would leave a stale copy embedded in an unchanged crate.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
