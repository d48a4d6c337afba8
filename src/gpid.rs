//! gpid (stub).
