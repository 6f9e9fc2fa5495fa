//! Where chunkmill reads and writes: a URL becomes a [`Store`] (local path, `file://`, `s3://`
//! or `memory://`), every write is atomic, and task markers record what is durably done.
//!
//! * [`Store`] — one capability-complete store behind a URL; its writes never leave a torn
//!   value: a local write goes to a temporary file and is renamed into place, an object-store
//!   put is atomic by itself.
//! * [`markers`] — task markers under a work dir.
//! * [`zarr`] — the one module that talks to `zarrs`: reading array metadata, creating arrays,
//!   decoding and encoding whole chunks, consolidated metadata.
//!
//! ```
//! use chunkmill_store::Store;
//!
//! let store = Store::open("memory://doc-example")?;
//! store.put("a/b", b"hello".to_vec())?;
//! assert_eq!(store.get("a/b")?.as_deref(), Some(&b"hello"[..]));
//! assert_eq!(store.list("a/")?, vec!["a/b".to_string()]);
//! # Ok::<(), chunkmill_store::StoreError>(())
//! ```
//!
//! S3 settings come from the usual variables: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_REGION` (default `us-east-1`) and `AWS_ENDPOINT_URL` for an
//! S3-compatible server (plain `http://` endpoints are allowed). Credentials are never printed.

pub mod dtype;
pub mod guard;
mod local;
pub use local::{sync_pending, PAGE as DIRECT_IO_ALIGNMENT};
pub mod markers;
mod memory;
mod s3;
mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod zarr;

pub use dtype::{DataType, TimeUnit, UnsupportedDataType};
pub use store::{ReadInto, ScratchIo, Store, StoreKind};
pub use zarrs_storage::Bytes;

/// What can go wrong reaching a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The URL is not one we can open.
    #[error("{url}: {reason}")]
    BadUrl { url: String, reason: String },
    /// The backend failed.
    #[error("{url}: {operation} {key}: {source}")]
    Backend {
        url: String,
        operation: &'static str,
        key: String,
        #[source]
        source: zarrs_storage::StorageError,
    },
    /// A value that should be JSON is not.
    #[error("{url}: {key}: invalid JSON: {source}{hint}")]
    Json {
        url: String,
        key: String,
        #[source]
        source: serde_json::Error,
        /// What the text at the error most likely is, when known (else empty).
        hint: &'static str,
    },
}
