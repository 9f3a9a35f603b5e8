//! The dead-letter table: the row a failed job becomes, the store that
//! inserts it, the writer that batches inserts, and the operators' queries.

mod nodelay;
pub(crate) mod queries;
mod row;
mod store;
#[cfg(test)]
pub(crate) mod testdb;
mod writer;

pub(crate) use row::{DeadLetter, Parts};
pub(crate) use store::{DeadLetterStore, InsertError, StoreError, about_the_row};
pub(crate) use writer::DeadLetterWriter;
