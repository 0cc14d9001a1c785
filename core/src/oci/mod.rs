//! The OCI distribution vocabulary: digests, names, media types, error codes.

pub mod digest;
pub mod error;
pub mod media;
pub mod name;

pub use digest::{Algorithm, Digest, Hasher};
pub use error::{ErrorCode, RegistryError, Result};
pub use name::{Reference, RepoName, Tag};
