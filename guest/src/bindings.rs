//! The one place WIT bindings are generated; other modules import from here.
#![allow(
    unsafe_code,
    reason = "wit-bindgen generates the canonical ABI glue with unsafe"
)]
#![allow(missing_docs, clippy::all)]

wit_bindgen::generate!({
    path: "../wit",
    world: "blockreg:registry/registry",
    generate_all,

});

// The export glue is generated code too, so it is expanded here, under the
// module's `unsafe_code` allowance, rather than at the crate root.
use crate::Component;
export!(Component with_types_in crate::bindings);
