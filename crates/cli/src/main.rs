//! The pymatris command.
fn main() {}
