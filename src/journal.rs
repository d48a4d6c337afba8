//! journal (stub).
