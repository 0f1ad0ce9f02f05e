//! The ABI conformance suite. Its cases arrive with the ABI hosts.
