//! Generated protobuf and gRPC code for the public contracts (`proto/`).

/// `remotemedia.v1`: the `DataBuffer` family carried on the data channel.
pub mod common {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("remotemedia.v1");
}

/// `remotemedia.v1.webrtc`: the signaling service.
pub mod signaling {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("remotemedia.v1.webrtc");
}

/// `remotemedia.v1.worker`: the internal API frontends call on media workers.
pub mod worker {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("remotemedia.v1.worker");
}
