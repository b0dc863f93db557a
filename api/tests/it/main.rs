//! Process-level tests of the sentinel binary.
