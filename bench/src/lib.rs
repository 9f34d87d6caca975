//! bench helpers.
