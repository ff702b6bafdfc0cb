//! Secrets: stdin intake, the locked zeroizing arena, and the wiping allocator.
//!
//! No type here derives `Debug` or `Display` over secret bytes.

pub mod accounts;
pub mod arena;
pub mod intake;
pub mod jwt;
pub mod wipe_alloc;

pub use arena::{ArenaError, LockedBuf, SecretArena, SecretRange};
pub use intake::{ChatgptCredential, Credential, Credentials, IntakeBuffer, IntakeError};
