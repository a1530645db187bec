//! The front doors: each reads its requests and writes its answers, and leaves turns to the
//! turn engine and storage to the store.

pub mod chats;
pub mod conversations;
pub mod files;
pub mod openai;
pub mod responses;
pub mod seed;
pub mod usage;
