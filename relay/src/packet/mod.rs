//! TEMPORARY stub, replaced by the real packet layer.
#![allow(missing_docs)]
pub mod demux;
pub mod rtcp;
pub mod rtp;
